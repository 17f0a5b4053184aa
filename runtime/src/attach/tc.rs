//! tc clsact filters: where the kernel lacks tcx (before 6.6), the same
//! entry programs run as `cls_bpf` filters in direct-action mode on the
//! device's clsact qdisc. `cls_bpf` ignores the programs' tcx attach type,
//! so the objects and their loading do not change.
//!
//! tc filters are not links: nothing pins them. The kernel keeps a filter
//! (and its program, and the program's maps) until it is deleted, so
//! enforcement outlives polcd just the same. What polcd pins instead is a
//! marker directory, `<endpoint>/tc-<iface>`: it says the endpoint is
//! enforced with tc on `iface`, so that a restarted polcd adopts the
//! filters and `polcd reset` removes them.
//!
//! Each direction is one filter at a fixed handle and priority
//! ([`HANDLE`], [`PRIORITY`]). A swap replaces the filter's program in
//! place (`RTM_NEWTFILTER` with `NLM_F_REPLACE`, same handle and priority):
//! `cls_bpf` switches its program pointer in one step, so each packet runs
//! either the old or the new program, never none. (Deleting and adding a
//! filter instead would let packets through unpoliced in between.)
//!
//! Netlink sockets work in the calling thread's network namespace: every
//! operation enters the device's namespace ([`in_namespace`]) and looks
//! its index up there.

use super::{errno_result, ifindex, in_namespace, program_by_id, switch_all, AttachError, Device, Switch};
use crate::datapath::Direction;
use crate::loader::LoadedEndpoint;
use libbpf_rs::libbpf_sys::{
    bpf_tc_attach, bpf_tc_detach, bpf_tc_hook, bpf_tc_hook_create, bpf_tc_opts, bpf_tc_query, BPF_TC_EGRESS,
    BPF_TC_F_REPLACE, BPF_TC_INGRESS,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The handle and priority of polc's filter in each direction.
pub const HANDLE: u32 = 1;
pub const PRIORITY: u32 = 1;

const MARKER_PREFIX: &str = "tc-";

/// The filters of one endpoint, on the device polcd found them on.
pub struct TcFilters {
    device: Device,
}

/// The marker directory saying `pins` is enforced with tc on `iface`.
pub fn marker(pins: &Path, iface: &str) -> PathBuf {
    pins.join(format!("{MARKER_PREFIX}{iface}"))
}

/// The device named by a marker under `pins`, if any.
pub fn marked_iface(pins: &Path) -> Option<String> {
    std::fs::read_dir(pins)
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(MARKER_PREFIX)).map(str::to_string))
}

impl TcFilters {
    /// Adds both entry programs of `endpoint` as filters on `device`, then
    /// the marker under `pins`. On failure nothing stays attached.
    pub fn attach(endpoint: &LoadedEndpoint, device: &Device, pins: &Path) -> Result<TcFilters, AttachError> {
        let filters = TcFilters { device: device.clone() };
        let mut programs = Vec::new();
        for direction in Direction::BOTH {
            programs.push(endpoint.program(direction.entry_program())?.as_fd().try_clone_to_owned().map_err(
                |source| AttachError::Attach {
                    program: direction.entry_program(),
                    iface: device.iface.clone(),
                    source,
                },
            )?);
        }
        let mut attached = Vec::new();
        for (direction, program) in Direction::BOTH.into_iter().zip(&programs) {
            match filters.add(direction, program) {
                Ok(()) => attached.push(direction),
                Err(e) => {
                    filters.remove(&attached);
                    return Err(e);
                }
            }
        }
        let path = marker(pins, &device.iface);
        if let Err(source) = std::fs::create_dir_all(&path) {
            filters.remove(&attached);
            return Err(AttachError::Marker { path, source });
        }
        Ok(filters)
    }

    /// The filters a marker under `pins` records, on the device of that
    /// name in `netns`.
    pub fn adopt(pins: &Path, netns: Option<&str>) -> Option<TcFilters> {
        let iface = marked_iface(pins)?;
        Some(TcFilters { device: Device { iface, netns: netns.map(str::to_string), mode: super::AttachMode::Tc } })
    }

    /// Whether both filters run on `device` as it is now (a device deleted
    /// and made again under the same name has none).
    pub fn is_live_on(&self, device: &Device) -> bool {
        device.iface == self.device.iface
            && Direction::BOTH.iter().all(|d| self.hook(*d).running_id().is_ok_and(|id| id != 0))
    }

    /// Replaces the programs of the filters of the directions `endpoint`
    /// loaded, in place; if the second fails, the first gets its previous
    /// program back.
    pub fn update(&self, endpoint: &LoadedEndpoint) -> Result<(), AttachError> {
        let directions = endpoint.loaded();
        let mut programs = Vec::new();
        for direction in directions {
            let program = endpoint.program(direction.entry_program())?;
            programs
                .push(program.as_fd().try_clone_to_owned().map_err(|source| super::update_error(*direction, source))?);
        }
        let mut hooks: Vec<FilterHook<'_>> = directions.iter().map(|d| self.hook(*d)).collect();
        switch_all(&mut hooks, &programs).map_err(|(i, source)| super::update_error(directions[i], source))
    }

    /// The kernel id of the program each filter runs now.
    pub fn program_ids(&self) -> Result<Vec<(Direction, u32)>, AttachError> {
        Direction::BOTH
            .into_iter()
            .map(|d| {
                let id = self.hook(d).running_id().map_err(|source| super::update_error(d, source))?;
                Ok((d, id))
            })
            .collect()
    }

    /// Deletes both filters (a device already gone took them along) and the marker.
    pub fn detach(self, pins: &Path) -> Result<(), AttachError> {
        let mut first_error = None;
        for direction in Direction::BOTH {
            if let Err(source) = self.hook(direction).delete() {
                let gone = [libc::ENOENT, libc::ENODEV, libc::EINVAL].contains(&source.raw_os_error().unwrap_or(0));
                if !gone && self.device.exists() {
                    first_error.get_or_insert(AttachError::TcDetach { iface: self.device.iface.clone(), source });
                }
            }
        }
        let _ = std::fs::remove_dir(marker(pins, &self.device.iface));
        first_error.map_or(Ok(()), Err)
    }

    fn add(&self, direction: Direction, program: &OwnedFd) -> Result<(), AttachError> {
        let hook = self.hook(direction);
        hook.create_qdisc().and_then(|()| hook.replace(program)).map_err(|source| AttachError::Attach {
            program: direction.entry_program(),
            iface: self.device.iface.clone(),
            source,
        })
    }

    /// Best effort: deletes the filters of `directions`.
    fn remove(&self, directions: &[Direction]) {
        for direction in directions {
            let _ = self.hook(*direction).delete();
        }
    }

    fn hook(&self, direction: Direction) -> FilterHook<'_> {
        FilterHook { device: &self.device, direction }
    }
}

/// One direction's filter.
struct FilterHook<'a> {
    device: &'a Device,
    direction: Direction,
}

impl FilterHook<'_> {
    /// Runs a libbpf tc call on the device's index, in its namespace.
    fn call(&self, f: impl FnOnce(&mut bpf_tc_hook, &mut bpf_tc_opts) -> i32) -> std::io::Result<bpf_tc_opts> {
        let result = in_namespace(self.device.netns.as_deref(), || {
            let index = ifindex(&self.device.iface)
                .ok()
                .flatten()
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
            let mut hook = bpf_tc_hook {
                sz: std::mem::size_of::<bpf_tc_hook>() as _,
                ifindex: i32::try_from(index).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?,
                // Packets to the endpoint leave through the veth's egress
                // (its ingress policy); packets from it arrive on its ingress.
                attach_point: match self.direction {
                    Direction::Ingress => BPF_TC_EGRESS,
                    Direction::Egress => BPF_TC_INGRESS,
                },
                ..Default::default()
            };
            let mut opts = bpf_tc_opts {
                sz: std::mem::size_of::<bpf_tc_opts>() as _,
                handle: HANDLE,
                priority: PRIORITY,
                ..Default::default()
            };
            errno_result(f(&mut hook, &mut opts)).map(|()| opts)
        });
        result.map_err(|e| std::io::Error::other(e.to_string()))?
    }

    fn create_qdisc(&self) -> std::io::Result<()> {
        // SAFETY: valid structs for the duration of the call.
        match self.call(|hook, _| unsafe { bpf_tc_hook_create(hook) }) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Adds the filter, or replaces its program in place.
    fn replace(&self, program: &OwnedFd) -> std::io::Result<()> {
        let fd = program.as_raw_fd();
        self.call(|hook, opts| {
            opts.prog_fd = fd;
            opts.flags = BPF_TC_F_REPLACE;
            // SAFETY: valid structs for the duration of the call.
            unsafe { bpf_tc_attach(hook, opts) }
        })
        .map(|_| ())
    }

    fn running_id(&self) -> std::io::Result<u32> {
        // SAFETY: valid structs for the duration of the call.
        self.call(|hook, opts| unsafe { bpf_tc_query(hook, opts) }).map(|opts| opts.prog_id)
    }

    fn delete(&self) -> std::io::Result<()> {
        // SAFETY: valid structs for the duration of the call.
        self.call(|hook, opts| unsafe { bpf_tc_detach(hook, opts) }).map(|_| ())
    }
}

impl Switch for FilterHook<'_> {
    type Program = OwnedFd;

    fn running(&self) -> std::io::Result<OwnedFd> {
        program_by_id(self.running_id()?)
    }

    fn switch(&mut self, program: &OwnedFd) -> std::io::Result<()> {
        self.replace(program)
    }
}
