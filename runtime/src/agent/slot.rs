//! One endpoint as an agent runs it (the policy-directory agent and the
//! bundle agent alike): what is enforced, when it was last regenerated,
//! what went wrong, and how that reads in `polcd status`.

use super::api::EndpointStatus;
use super::daemon::{log, now_ms};
use super::pins::PinRoot;
use crate::attach::Device;
use crate::swap::{Enforced, Generation};

/// `error` as said of endpoint `name`: prefixed with its name unless the
/// error already starts with it (load and swap errors do).
pub fn endpoint_error(name: &str, error: &str) -> String {
    let prefix = format!("endpoint `{name}`");
    if error.starts_with(&prefix) {
        error.to_string()
    } else {
        format!("{prefix}: {error}")
    }
}

/// `.rodata` values by variable name, as in [`crate::swap::Artifact::constants`].
pub type Constants = Vec<(String, Vec<u8>)>;

#[derive(Default)]
pub struct Slot {
    pub enforced: Option<Enforced>,
    /// The `.rodata` constants the running programs were loaded with (`None`
    /// until this agent loaded them). With the object, they fix the
    /// programs: a change keeping both swaps the policy tables only.
    pub constants: Option<Constants>,
    /// The policy version of its last regeneration.
    pub policy_version: u64,
    pub last_regeneration_ms: Option<u64>,
    /// How the last regeneration was applied.
    pub last_swap: Option<SwapKind>,
    pub last_error: Option<String>,
}

/// How a regeneration reaches the running programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapKind {
    /// Same programs (object and constants): new policy tables installed.
    Tables,
    /// A new generation loaded, and the links switched to it (or attached).
    Program,
}

impl SwapKind {
    pub fn name(self) -> &'static str {
        match self {
            SwapKind::Tables => "tables",
            SwapKind::Program => "program",
        }
    }
}

impl Slot {
    /// Switches the endpoint to `generation` (attaching it to `device` when
    /// nothing runs yet) and records the outcome. Once the new generation
    /// runs, links a previous agent left set aside for it go.
    pub fn switch(&mut self, name: &str, generation: Generation, device: &Device, pins: &PinRoot, version: u64) {
        let result = match self.enforced.as_mut() {
            Some(enforced) => enforced.switch_to(generation),
            None => Enforced::attach(generation, device, &pins.node(), &pins.endpoint(name)).map(|e| {
                self.enforced = Some(e);
            }),
        };
        match result {
            Ok(()) => {
                pins.drop_stale(name);
                self.policy_version = version;
                self.last_regeneration_ms = Some(now_ms());
                self.last_swap = Some(SwapKind::Program);
                self.last_error = None;
            }
            Err(e) => {
                log(&endpoint_error(name, &e.to_string()));
                self.last_error = Some(e.to_string());
            }
        }
    }
}

/// What status says of an endpoint; `slot` is `None` before any attempt.
pub struct Described<'a> {
    pub name: &'a str,
    /// `file`, `api` or `bundle`.
    pub source: &'a str,
    pub identity: u32,
    pub iface: Option<&'a String>,
    pub netns: Option<&'a String>,
}

impl Described<'_> {
    pub fn status(&self, slot: Option<&Slot>) -> EndpointStatus {
        let enforced = slot.and_then(|s| s.enforced.as_ref());
        let state = match (enforced, self.iface) {
            (Some(_), _) => "enforcing",
            (None, None) => "no-iface",
            (None, Some(_)) if slot.is_some_and(|s| s.last_error.is_some()) => "failed",
            (None, Some(_)) => "waiting-for-device",
        };
        EndpointStatus {
            name: self.name.to_string(),
            source: self.source.to_string(),
            identity: self.identity,
            iface: self.iface.cloned(),
            netns: self.netns.cloned(),
            state: state.to_string(),
            generation: enforced.map_or(0, Enforced::generation),
            hook: enforced.map(|e| e.hook().to_string()),
            program: enforced
                .and_then(Enforced::object)
                .and_then(|o| o.file_stem())
                .map(|stem| stem.to_string_lossy().into_owned()),
            policy_version: slot.map_or(0, |s| s.policy_version),
            last_regeneration_ms: slot.and_then(|s| s.last_regeneration_ms),
            last_swap: slot.and_then(|s| s.last_swap).map(|k| k.name().to_string()),
            loaded_directions: enforced
                .and_then(Enforced::current)
                .map(|loaded| loaded.loaded().iter().map(|d| d.name().to_string()).collect()),
            last_error: slot.and_then(|s| s.last_error.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_error;

    #[test]
    fn an_error_names_its_endpoint_once() {
        assert_eq!(endpoint_error("app1", "clang failed"), "endpoint `app1`: clang failed");
        let load = "endpoint `app1`: the kernel rejected `x.o`: Invalid argument";
        assert_eq!(endpoint_error("app1", load), load);
        // Another endpoint's name is not this one's.
        assert_eq!(endpoint_error("app", load), format!("endpoint `app`: {load}"));
    }
}
