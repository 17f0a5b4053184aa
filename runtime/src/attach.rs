//! Attaching an endpoint's programs to its host-side veth with tcx, and
//! swapping them atomically.
//!
//! Packets from the endpoint arrive on the host-side veth's tcx ingress: the
//! endpoint's egress policy (`from_ep`) runs there. Packets to the endpoint
//! leave through the veth's tcx egress: its ingress policy (`to_ep`).
//!
//! The links are pinned (`<pins>/link_from_ep`, `<pins>/link_to_ep`), so
//! enforcement outlives the process that attached it; [`Attachment::adopt`]
//! opens them again. [`Attachment::update`] replaces the program behind both
//! links with `BPF_LINK_UPDATE`: each direction switches in one step, with no
//! moment where a packet passes unpoliced.
//!
//! The device lives in some network namespace (the node's): link creation
//! resolves the interface name and index in the calling thread's namespace,
//! and ifindexes repeat across namespaces, so attaching enters it on the
//! current thread and comes back ([`in_namespace`]).

use crate::datapath::Direction;
use crate::loader::{LoadError, LoadedEndpoint};
use libbpf_rs::{AsRawLibbpf, Link};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot enter network namespace `{ns}`: {source}")]
    Netns { ns: String, source: std::io::Error },
    #[error("no device `{iface}` in network namespace `{ns}`")]
    NoDevice { iface: String, ns: String },
    #[error("cannot attach `{program}` to `{iface}` with tcx: {source}")]
    Attach { program: &'static str, iface: String, source: std::io::Error },
    #[error("`{path}` exists: the endpoint is already attached (adopt it or detach first)")]
    AlreadyAttached { path: PathBuf },
    #[error("cannot pin link at `{path}`: {source}")]
    Pin { path: PathBuf, source: libbpf_rs::Error },
    #[error("cannot open pinned link `{path}`: {source}")]
    Open { path: PathBuf, source: libbpf_rs::Error },
    #[error("cannot swap `{program}` into its link: {source}")]
    Update { program: &'static str, source: libbpf_rs::Error },
    #[error("cannot detach link `{path}`: {source}")]
    Detach { path: PathBuf, source: libbpf_rs::Error },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Where an endpoint's host-side device is: its name, and the network
/// namespace holding it (`None`: the caller's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub iface: String,
    /// A name under `/run/netns/` or a path (`/proc/PID/ns/net`).
    pub netns: Option<String>,
}

impl Device {
    pub fn here(iface: &str) -> Device {
        Device { iface: iface.to_string(), netns: None }
    }

    pub fn in_netns(iface: &str, netns: &str) -> Device {
        Device { iface: iface.to_string(), netns: Some(netns.to_string()) }
    }

    fn ns_label(&self) -> String {
        self.netns.clone().unwrap_or_else(|| "(own)".to_string())
    }

    /// The device's index now (`None`: no such device).
    pub fn index(&self) -> Option<u32> {
        match in_namespace(self.netns.as_deref(), || ifindex(&self.iface)) {
            Ok(Ok(index)) => index,
            _ => None,
        }
    }

    /// Whether the device exists now.
    pub fn exists(&self) -> bool {
        self.index().is_some()
    }
}

/// The two links of one endpoint: (tcx direction on the veth) in the order
/// of [`Direction::BOTH`].
pub struct Attachment {
    links: Vec<(Direction, Link)>,
    pins: PathBuf,
}

/// The pin file of a direction's link.
pub fn link_pin(pins: &Path, direction: Direction) -> PathBuf {
    pins.join(format!("link_{}", direction.entry_program()))
}

impl Attachment {
    /// Attaches both entry programs of `endpoint` to `device` and pins the
    /// links under `pins`. Fails, attaching nothing, if links are pinned there.
    pub fn attach(endpoint: &LoadedEndpoint, device: &Device, pins: &Path) -> Result<Attachment, AttachError> {
        for direction in Direction::BOTH {
            let path = link_pin(pins, direction);
            if path.exists() {
                return Err(AttachError::AlreadyAttached { path });
            }
        }
        std::fs::create_dir_all(pins).map_err(|source| LoadError::PinDir { path: pins.to_path_buf(), source })?;
        let mut attachment = Attachment { links: Vec::new(), pins: pins.to_path_buf() };
        let result =
            in_namespace(device.netns.as_deref(), || -> Result<(), AttachError> {
                let index = ifindex(&device.iface)?
                    .ok_or_else(|| AttachError::NoDevice { iface: device.iface.clone(), ns: device.ns_label() })?;
                for direction in Direction::BOTH {
                    let program = direction.entry_program();
                    let link = attach_tcx(&endpoint.program(program)?, index)
                        .map_err(|source| AttachError::Attach { program, iface: device.iface.clone(), source })?;
                    attachment.links.push((direction, link));
                }
                Ok(())
            });
        // On any failure `attachment` drops here: unpinned links detach.
        result??;
        for (direction, link) in &mut attachment.links {
            let path = link_pin(pins, *direction);
            link.pin(&path).map_err(|source| AttachError::Pin { path, source })?;
        }
        Ok(attachment)
    }

    /// Opens the links pinned under `pins` (left by an earlier process).
    pub fn adopt(pins: &Path) -> Result<Attachment, AttachError> {
        let mut links = Vec::new();
        for direction in Direction::BOTH {
            let path = link_pin(pins, direction);
            let link = Link::open(&path).map_err(|source| AttachError::Open { path, source })?;
            links.push((direction, link));
        }
        Ok(Attachment { links, pins: pins.to_path_buf() })
    }

    /// Whether links are pinned under `pins`.
    pub fn is_pinned(pins: &Path) -> bool {
        Direction::BOTH.iter().all(|d| link_pin(pins, *d).exists())
    }

    pub fn pins(&self) -> &Path {
        &self.pins
    }

    /// The index of the device both links are attached to; `None` when a
    /// link is defunct (its device was deleted: the kernel detached it).
    pub fn device_index(&self) -> Option<u32> {
        let mut index = None;
        for (_, link) in &self.links {
            match link.info().ok().map(|i| i.info) {
                Some(libbpf_rs::query::LinkTypeInfo::Tcx(tcx)) if tcx.ifindex != 0 => {
                    if index.is_some_and(|i| i != tcx.ifindex) {
                        return None;
                    }
                    index = Some(tcx.ifindex);
                }
                _ => return None,
            }
        }
        index
    }

    /// Whether the links run on `device` as it is now (not on a deleted
    /// device, nor on an earlier device of the same name).
    pub fn is_live_on(&self, device: &Device) -> bool {
        self.device_index().is_some_and(|i| device.index() == Some(i))
    }

    /// Swaps `endpoint`'s entry programs into the links, each direction in
    /// one atomic step. Both programs are looked up before any link changes.
    pub fn update(&mut self, endpoint: &LoadedEndpoint) -> Result<(), AttachError> {
        let programs: Vec<_> =
            self.links.iter().map(|(d, _)| endpoint.program(d.entry_program())).collect::<Result<_, _>>()?;
        for ((direction, link), program) in self.links.iter_mut().zip(&programs) {
            link.update_prog(program)
                .map_err(|source| AttachError::Update { program: direction.entry_program(), source })?;
        }
        Ok(())
    }

    /// Detaches both links and removes their pins.
    pub fn detach(self) -> Result<(), AttachError> {
        let mut first_error = None;
        for (direction, mut link) in self.links {
            let path = link_pin(&self.pins, direction);
            // A link whose device is gone is already defunct: detaching it
            // fails with ENOLINK and there is nothing left to do.
            if let Err(source) = link.detach() {
                if !is_errno(&source, libc::ENOLINK) {
                    first_error.get_or_insert(AttachError::Detach { path: path.clone(), source });
                }
            }
            let _ = link.unpin();
            let _ = std::fs::remove_file(&path);
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn is_errno(error: &libbpf_rs::Error, errno: i32) -> bool {
    // libbpf-rs keeps the errno only in the message.
    error.to_string().contains(&std::io::Error::from_raw_os_error(errno).to_string())
}

fn attach_tcx(program: &libbpf_rs::Program<'_>, ifindex: u32) -> Result<Link, std::io::Error> {
    let opts = libbpf_rs::libbpf_sys::bpf_tcx_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_tcx_opts>() as _,
        ..Default::default()
    };
    let index = i32::try_from(ifindex).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the program pointer is valid while `program` lives; libbpf
    // copies what it needs from `opts`. The returned link is owned by us.
    let ptr =
        unsafe { libbpf_rs::libbpf_sys::bpf_program__attach_tcx(program.as_libbpf_object().as_ptr(), index, &opts) };
    match NonNull::new(ptr) {
        // SAFETY: a non-null link freshly returned by libbpf.
        Some(ptr) => Ok(unsafe { Link::from_ptr(ptr) }),
        None => Err(std::io::Error::last_os_error()),
    }
}

/// The index of `iface` in the current thread's namespace.
fn ifindex(iface: &str) -> Result<Option<u32>, AttachError> {
    let name =
        CString::new(iface).map_err(|_| AttachError::NoDevice { iface: iface.to_string(), ns: String::new() })?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    Ok((index != 0).then_some(index))
}

fn netns_path(ns: &str) -> PathBuf {
    if ns.contains('/') {
        PathBuf::from(ns)
    } else {
        Path::new("/run/netns").join(ns)
    }
}

/// Runs `f` on the current thread inside network namespace `ns` (`None`:
/// where it is) and returns to the thread's own namespace afterwards.
pub fn in_namespace<T>(ns: Option<&str>, f: impl FnOnce() -> T) -> Result<T, AttachError> {
    let Some(ns) = ns else { return Ok(f()) };
    let netns_error = |source| AttachError::Netns { ns: ns.to_string(), source };
    let own: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net").map_err(netns_error)?.into();
    let target = std::fs::File::open(netns_path(ns)).map_err(netns_error)?;
    setns(target.as_raw_fd()).map_err(netns_error)?;
    let out = f();
    // Going back cannot reasonably fail (we came from there); if it did, this
    // thread would act in the wrong namespace: stop rather than go on.
    if let Err(e) = setns(own.as_raw_fd()) {
        #[allow(clippy::panic)]
        {
            panic!("cannot return to the thread's own network namespace: {e}");
        }
    }
    Ok(out)
}

fn setns(fd: i32) -> Result<(), std::io::Error> {
    // SAFETY: a valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
