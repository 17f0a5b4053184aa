//! Attaching an endpoint's programs to its host-side veth with tcx (or tc
//! clsact filters where the kernel lacks tcx: [`tc`]), and swapping them
//! atomically.
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
//!
//! [`AttachMode`] picks the hook: `auto` (the default) uses tcx when the
//! kernel has it (probed once) and tc otherwise, also when a tcx attach is
//! refused as unsupported; `tcx` and `tc` force one.

pub mod tc;

use crate::datapath::Direction;
use crate::loader::{LoadError, LoadedEndpoint};
use libbpf_rs::{AsRawLibbpf, Link};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
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
    Update { program: &'static str, source: std::io::Error },
    #[error("cannot detach link `{path}`: {source}")]
    Detach { path: PathBuf, source: libbpf_rs::Error },
    #[error("cannot record the tc attachment at `{path}`: {source}")]
    Marker { path: PathBuf, source: std::io::Error },
    #[error("cannot delete the tc filters on `{iface}`: {source}")]
    TcDetach { iface: String, source: std::io::Error },
    #[error("`{0}` is not an attach mode (auto, tcx or tc)")]
    Mode(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Which kernel hook runs the programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// tcx where the kernel has it, tc clsact otherwise.
    #[default]
    Auto,
    Tcx,
    Tc,
}

impl std::str::FromStr for AttachMode {
    type Err = AttachError;

    fn from_str(text: &str) -> Result<AttachMode, AttachError> {
        match text {
            "auto" => Ok(AttachMode::Auto),
            "tcx" => Ok(AttachMode::Tcx),
            "tc" => Ok(AttachMode::Tc),
            other => Err(AttachError::Mode(other.to_string())),
        }
    }
}

/// Whether this kernel has tcx (6.6 and later): querying tcx programs on
/// `lo` succeeds there and fails with EINVAL before. Probed once.
pub fn kernel_has_tcx() -> bool {
    static HAS_TCX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS_TCX.get_or_init(|| {
        let mut opts = libbpf_rs::libbpf_sys::bpf_prog_query_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_query_opts>() as _,
            ..Default::default()
        };
        // SAFETY: a zeroed options struct with its size; no output arrays.
        let rc =
            unsafe { libbpf_rs::libbpf_sys::bpf_prog_query_opts(1, libbpf_rs::libbpf_sys::BPF_TCX_INGRESS, &mut opts) };
        rc == 0
    })
}

/// Where an endpoint's host-side device is: its name, and the network
/// namespace holding it (`None`: the caller's own); and how to attach there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub iface: String,
    /// A name under `/run/netns/` or a path (`/proc/PID/ns/net`).
    pub netns: Option<String>,
    pub mode: AttachMode,
}

impl Device {
    pub fn here(iface: &str) -> Device {
        Device { iface: iface.to_string(), netns: None, mode: AttachMode::Auto }
    }

    pub fn in_netns(iface: &str, netns: &str) -> Device {
        Device { iface: iface.to_string(), netns: Some(netns.to_string()), mode: AttachMode::Auto }
    }

    pub fn with_mode(self, mode: AttachMode) -> Device {
        Device { mode, ..self }
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

/// One endpoint's programs on its device.
pub struct Attachment {
    hooks: Hooks,
    pins: PathBuf,
}

enum Hooks {
    /// The two links, in the order of [`Direction::BOTH`].
    Tcx(Vec<(Direction, Link)>),
    Tc(tc::TcFilters),
}

/// The pin file of a direction's link.
pub fn link_pin(pins: &Path, direction: Direction) -> PathBuf {
    pins.join(format!("link_{}", direction.entry_program()))
}

impl Attachment {
    /// Attaches both entry programs of `endpoint` to `device` (with the
    /// device's [`AttachMode`]) and pins the links (or the tc marker) under
    /// `pins`. Fails, attaching nothing, if something is pinned there.
    pub fn attach(endpoint: &LoadedEndpoint, device: &Device, pins: &Path) -> Result<Attachment, AttachError> {
        for direction in Direction::BOTH {
            let path = link_pin(pins, direction);
            if path.exists() {
                return Err(AttachError::AlreadyAttached { path });
            }
        }
        if let Some(iface) = tc::marked_iface(pins) {
            return Err(AttachError::AlreadyAttached { path: tc::marker(pins, &iface) });
        }
        std::fs::create_dir_all(pins).map_err(|source| LoadError::PinDir { path: pins.to_path_buf(), source })?;
        let use_tc = match device.mode {
            AttachMode::Tc => true,
            AttachMode::Tcx => false,
            AttachMode::Auto => !kernel_has_tcx(),
        };
        if use_tc {
            let filters = tc::TcFilters::attach(endpoint, device, pins)?;
            return Ok(Attachment { hooks: Hooks::Tc(filters), pins: pins.to_path_buf() });
        }
        match Attachment::attach_tcx(endpoint, device, pins) {
            // A kernel that refuses tcx as such (an old or unusual build the
            // probe did not catch): fall back to tc in `auto` mode.
            Err(AttachError::Attach { source, .. })
                if device.mode == AttachMode::Auto
                    && [libc::EINVAL, libc::EOPNOTSUPP].contains(&source.raw_os_error().unwrap_or(0)) =>
            {
                let filters = tc::TcFilters::attach(endpoint, device, pins)?;
                Ok(Attachment { hooks: Hooks::Tc(filters), pins: pins.to_path_buf() })
            }
            other => other,
        }
    }

    fn attach_tcx(endpoint: &LoadedEndpoint, device: &Device, pins: &Path) -> Result<Attachment, AttachError> {
        let mut links: Vec<(Direction, Link)> = Vec::new();
        let result =
            in_namespace(device.netns.as_deref(), || -> Result<(), AttachError> {
                let index = ifindex(&device.iface)?
                    .ok_or_else(|| AttachError::NoDevice { iface: device.iface.clone(), ns: device.ns_label() })?;
                for direction in Direction::BOTH {
                    let program = direction.entry_program();
                    let link = attach_tcx(&endpoint.program(program)?, index)
                        .map_err(|source| AttachError::Attach { program, iface: device.iface.clone(), source })?;
                    links.push((direction, link));
                }
                Ok(())
            });
        // On any failure `links` drops here: unpinned links detach.
        result??;
        for i in 0..links.len() {
            let (direction, link) = &mut links[i];
            let path = link_pin(pins, *direction);
            if let Err(source) = link.pin(&path) {
                // The links pinned so far would outlive this error and
                // enforce half an endpoint: unpin them, so that dropping
                // `links` detaches every link.
                for (direction, link) in &mut links[..i] {
                    let _ = link.unpin();
                    let _ = std::fs::remove_file(link_pin(pins, *direction));
                }
                return Err(AttachError::Pin { path, source });
            }
        }
        Ok(Attachment { hooks: Hooks::Tcx(links), pins: pins.to_path_buf() })
    }

    /// Takes over what an earlier process left under `pins`: the pinned
    /// tcx links, or the tc filters its marker names (on that device in
    /// `netns`, the namespace the filters' device is in).
    pub fn adopt(pins: &Path, netns: Option<&str>) -> Result<Attachment, AttachError> {
        if let Some(filters) = tc::TcFilters::adopt(pins, netns) {
            return Ok(Attachment { hooks: Hooks::Tc(filters), pins: pins.to_path_buf() });
        }
        let mut links = Vec::new();
        for direction in Direction::BOTH {
            let path = link_pin(pins, direction);
            let link = Link::open(&path).map_err(|source| AttachError::Open { path, source })?;
            links.push((direction, link));
        }
        Ok(Attachment { hooks: Hooks::Tcx(links), pins: pins.to_path_buf() })
    }

    /// Whether an attachment is recorded under `pins`: both links, or a tc marker.
    pub fn is_pinned(pins: &Path) -> bool {
        Direction::BOTH.iter().all(|d| link_pin(pins, *d).exists()) || tc::marked_iface(pins).is_some()
    }

    /// Whether anything of an attachment is recorded under `pins` (a link
    /// pin, or a tc marker): a half-pinned endpoint has something running.
    pub fn has_pins(pins: &Path) -> bool {
        Direction::BOTH.iter().any(|d| link_pin(pins, *d).exists()) || tc::marked_iface(pins).is_some()
    }

    /// The hook running the programs: `tcx` or `tc`.
    pub fn hook(&self) -> &'static str {
        match self.hooks {
            Hooks::Tcx(_) => "tcx",
            Hooks::Tc(_) => "tc",
        }
    }

    pub fn pins(&self) -> &Path {
        &self.pins
    }

    /// The index of the device both links are attached to; `None` when a
    /// link is defunct (its device was deleted: the kernel detached it).
    pub fn device_index(&self) -> Option<u32> {
        let Hooks::Tcx(links) = &self.hooks else { return None };
        let mut index = None;
        for (_, link) in links {
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
        match &self.hooks {
            Hooks::Tcx(_) => self.device_index().is_some_and(|i| device.index() == Some(i)),
            Hooks::Tc(filters) => filters.is_live_on(device),
        }
    }

    /// Swaps `endpoint`'s entry programs into the links of the directions
    /// it loaded ([`LoadedEndpoint::loaded`]; a kept direction's link keeps
    /// its program), each direction in one atomic step. The programs are
    /// looked up before any link changes. If the second direction cannot be
    /// switched, the first gets its previous program back: both directions
    /// keep running one generation.
    pub fn update(&mut self, endpoint: &LoadedEndpoint) -> Result<(), AttachError> {
        let links = match &self.hooks {
            Hooks::Tcx(links) => links,
            Hooks::Tc(filters) => return filters.update(endpoint),
        };
        let links: Vec<&(Direction, Link)> = links.iter().filter(|(d, _)| endpoint.loaded().contains(d)).collect();
        let mut programs = Vec::new();
        for (direction, _) in &links {
            let program = endpoint.program(direction.entry_program())?;
            programs.push(program.as_fd().try_clone_to_owned().map_err(|source| update_error(*direction, source))?);
        }
        let mut hooks: Vec<TcxHook<'_>> = links.iter().map(|(_, link)| TcxHook(link)).collect();
        switch_all(&mut hooks, &programs).map_err(|(i, source)| update_error(links[i].0, source))
    }

    /// The kernel id of the program each direction's link (or filter) runs
    /// now, in [`Direction::BOTH`] order.
    pub fn program_ids(&self) -> Result<Vec<(Direction, u32)>, AttachError> {
        match &self.hooks {
            Hooks::Tcx(links) => links
                .iter()
                .map(|(direction, link)| {
                    let info = link
                        .info()
                        .map_err(|source| AttachError::Open { path: link_pin(&self.pins, *direction), source })?;
                    Ok((*direction, info.prog_id))
                })
                .collect(),
            Hooks::Tc(filters) => filters.program_ids(),
        }
    }

    /// Detaches both links (or deletes both filters) and removes their pins.
    pub fn detach(self) -> Result<(), AttachError> {
        let links = match self.hooks {
            Hooks::Tcx(links) => links,
            Hooks::Tc(filters) => return filters.detach(&self.pins),
        };
        let mut first_error = None;
        for (direction, mut link) in links {
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

fn update_error(direction: Direction, source: std::io::Error) -> AttachError {
    AttachError::Update { program: direction.entry_program(), source }
}

/// Something running one program that can be switched to another in one
/// step: a tcx link (`BPF_LINK_UPDATE`), a tc filter (replaced in place).
trait Switch {
    /// The program handle a switch takes.
    type Program;
    /// The program running now.
    fn running(&self) -> std::io::Result<Self::Program>;
    fn switch(&mut self, program: &Self::Program) -> std::io::Result<()>;
}

/// Switches `hooks[i]` to `programs[i]`, in order. When one fails, the
/// hooks already switched go back to what they ran, so that no direction
/// is left on the new programs while another runs the old ones; the error
/// says which hook failed.
fn switch_all<S: Switch>(hooks: &mut [S], programs: &[S::Program]) -> Result<(), (usize, std::io::Error)> {
    let mut previous = Vec::with_capacity(hooks.len());
    for (i, hook) in hooks.iter().enumerate() {
        previous.push(hook.running().map_err(|e| (i, e))?);
    }
    for i in 0..hooks.len().min(programs.len()) {
        if let Err(e) = hooks[i].switch(&programs[i]) {
            for (hook, old) in hooks[..i].iter_mut().zip(&previous).rev() {
                // Best effort: the original error is the one to report.
                let _ = hook.switch(old);
            }
            return Err((i, e));
        }
    }
    Ok(())
}

/// A tcx link as a [`Switch`]: programs are file descriptors.
struct TcxHook<'a>(&'a Link);

impl Switch for TcxHook<'_> {
    type Program = OwnedFd;

    fn running(&self) -> std::io::Result<OwnedFd> {
        let info = self.0.info().map_err(|e| std::io::Error::other(e.to_string()))?;
        program_by_id(info.prog_id)
    }

    fn switch(&mut self, program: &OwnedFd) -> std::io::Result<()> {
        // SAFETY: two valid descriptors; null options (no expected old program).
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_link_update(self.0.as_fd().as_raw_fd(), program.as_raw_fd(), std::ptr::null())
        };
        errno_result(rc)
    }
}

/// A descriptor of the loaded program with kernel id `id`.
fn program_by_id(id: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: no pointers; the returned descriptor is ours.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel ids of the maps the loaded program with id `id` uses (empty
/// when it cannot be asked).
pub(crate) fn program_map_ids(id: u32) -> Vec<u32> {
    let Ok(program) = program_by_id(id) else { return Vec::new() };
    let info_of = |ids: &mut [u32]| {
        // SAFETY: a zeroed plain struct; `map_ids` points at `ids`, which
        // outlives the call and holds `nr_map_ids` entries.
        let mut info: libbpf_rs::libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
        info.nr_map_ids = ids.len() as u32;
        info.map_ids = ids.as_mut_ptr() as u64;
        let mut len = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
        let rc = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(program.as_raw_fd(), &mut info, &mut len) };
        (rc == 0).then_some(info.nr_map_ids as usize)
    };
    let Some(count) = info_of(&mut []) else { return Vec::new() };
    let mut ids = vec![0u32; count];
    match info_of(&mut ids) {
        Some(now) => {
            ids.truncate(now.min(count));
            ids
        }
        None => Vec::new(),
    }
}

/// libbpf's convention: 0, or a negative errno.
fn errno_result(rc: i32) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc.abs()))
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

#[cfg(test)]
mod tests {
    use super::{switch_all, Switch};

    /// A hook running program `running`; switching to `refuse` fails.
    struct Fake {
        running: u32,
        refuse: Option<u32>,
    }

    impl Switch for Fake {
        type Program = u32;
        fn running(&self) -> std::io::Result<u32> {
            Ok(self.running)
        }
        fn switch(&mut self, program: &u32) -> std::io::Result<()> {
            if self.refuse == Some(*program) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOLINK));
            }
            self.running = *program;
            Ok(())
        }
    }

    #[test]
    fn a_failed_second_switch_puts_the_first_back() {
        let mut hooks = [Fake { running: 1, refuse: None }, Fake { running: 1, refuse: Some(2) }];
        let result = switch_all(&mut hooks, &[2, 2]);
        assert_eq!(result.map_err(|(i, _)| i), Err(1));
        assert_eq!([hooks[0].running, hooks[1].running], [1, 1], "both directions run the old program");
    }

    #[test]
    fn switches_every_hook_when_all_succeed() {
        let mut hooks = [Fake { running: 1, refuse: None }, Fake { running: 1, refuse: None }];
        assert!(switch_all(&mut hooks, &[2, 3]).is_ok());
        assert_eq!([hooks[0].running, hooks[1].running], [2, 3]);
    }
}
