//! `polcd stats`: packets and bytes per endpoint (allowed, dropped, by
//! reason) and per rule, from the per-CPU counter arrays (`ep_metrics`) of
//! the generations the endpoints run.
//!
//! Every generation has its own counter array, so a swap starts the new
//! generation at zero. [`Counters`] keeps them going: it holds a handle on
//! the running generation's array, and when an endpoint switches to a new
//! generation it reads the old array's final values (the handle keeps the
//! array alive after its pins are gone) and adds them to what it carries.
//! Rules are carried by (policy, rule name), not by number: numbers are
//! assigned in source order and move when rules are added above. Counters
//! go with an endpoint that is removed.
//!
//! A restarted polcd goes on counting from where the previous one was
//! ([`Counters::persisted`]): after every change that moves an endpoint to
//! another array or mapping, what is carried and which array (kernel map id)
//! counts under which mapping are saved in `STATE/counters.json`; the running
//! arrays are pinned with their generation, so a new polcd reopens them by id
//! and adds what they hold. What a generation replaced in the moment before
//! a `kill -9` (after the switch, before the save) counted is lost with it.

use super::catalog::{Catalog, RuleInfo};
use crate::datapath::{Direction, Reason, METRICS_MAP};
use crate::loader::{read_metrics, LoadedEndpoint};
use crate::swap::Enforced;
use libbpf_rs::{MapCore, MapHandle};
use polc::codegen::bundle::COUNTERS_PER_SLOT;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file in polcd's state directory that keeps the counters across restarts.
pub const COUNTERS_FILE: &str = "counters.json";

/// Packets and bytes (bytes: the length of the packet as the program saw
/// it, Ethernet header included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, other: Count) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// One direction of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionStats {
    pub allowed: Count,
    pub dropped: Count,
    /// By the datapath's reason (`policy-allow`, `policy-deny`, ...): only
    /// reasons that counted something.
    pub reasons: BTreeMap<String, Count>,
}

impl DirectionStats {
    /// The reasons that are drops, with their counts.
    pub fn drops(&self) -> impl Iterator<Item = (&str, Count)> {
        self.reasons
            .iter()
            .filter(|(reason, _)| Reason::all().iter().any(|r| r.name() == reason.as_str() && r.is_drop()))
            .map(|(reason, count)| (reason.as_str(), *count))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub name: String,
    pub identity: u32,
    /// To the endpoint.
    pub ingress: DirectionStats,
    /// From the endpoint.
    pub egress: DirectionStats,
}

/// One rule, summed over the endpoints it applies to. Its packets are those
/// it decided and those of the connections it allowed (established, reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    pub rule: String,
    pub policy: String,
    pub action: String,
    pub direction: String,
    /// Where the rule is written (where it was, for a rule since removed).
    pub file: String,
    pub line: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub endpoints: Vec<EndpointStats>,
    /// Every rule of the policy set (zero if it never matched), then rules
    /// since removed that counted something.
    pub rules: Vec<RuleStats>,
}

/// A rule across policy versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleName {
    pub policy: String,
    pub name: String,
}

impl RuleName {
    pub fn of(info: &RuleInfo) -> RuleName {
        RuleName { policy: info.policy.clone(), name: info.name.clone() }
    }
}

type Tally = BTreeMap<(Option<RuleName>, Reason, Direction), Count>;

/// The running generation's counter array.
struct Live {
    map_id: u32,
    metrics: MapHandle,
    rule_slots: Vec<u32>,
    /// Its rule numbers, as they were when it was built.
    rules: BTreeMap<u32, RuleName>,
    /// What the array held, under this mapping, when this mapping began: a
    /// table-only swap keeps the array but may give its slots to other
    /// rules, and what the slots counted before belongs to the old ones.
    baseline: Tally,
}

impl Live {
    /// What it counted since its mapping began.
    fn read(&self, into: &mut Tally) {
        let mut now = Tally::new();
        self.read_raw(&mut now);
        for (key, count) in now {
            let before = self.baseline.get(&key).copied().unwrap_or_default();
            let since = Count {
                packets: count.packets.saturating_sub(before.packets),
                bytes: count.bytes.saturating_sub(before.bytes),
            };
            into.entry(key).or_default().add(since);
        }
    }

    /// Everything the array holds, named with this mapping.
    fn read_raw(&self, into: &mut Tally) {
        // A read that fails counts nothing (the next one will).
        for (key, counter) in read_metrics(&self.metrics, &self.rule_slots).unwrap_or_default() {
            let rule = (key.rule != 0).then(|| {
                self.rules
                    .get(&key.rule)
                    .cloned()
                    .unwrap_or(RuleName { policy: "?".into(), name: format!("#{}", key.rule) })
            });
            let count = Count { packets: counter.packets, bytes: counter.bytes };
            into.entry((rule, key.reason, key.direction)).or_default().add(count);
        }
    }
}

#[derive(Default)]
struct EndpointCounters {
    live: Option<Live>,
    /// Final counts of generations that ran before `live`.
    carried: Tally,
}

/// What an endpoint runs, for [`Counters::follow`].
#[derive(Clone, Copy)]
pub enum Runs<'a> {
    /// A generation this polcd loaded.
    Loaded(&'a LoadedEndpoint),
    /// Programs a previous polcd loaded, adopted and not yet replaced.
    Adopted,
    /// Nothing (not enforced, or its device went away).
    Nothing,
}

impl<'a> Runs<'a> {
    pub fn of(enforced: Option<&'a Enforced>) -> Runs<'a> {
        match enforced {
            None => Runs::Nothing,
            Some(enforced) => enforced.current().map_or(Runs::Adopted, Runs::Loaded),
        }
    }
}

/// The counters of every enforced endpoint, across generation swaps.
#[derive(Default)]
pub struct Counters {
    endpoints: BTreeMap<String, EndpointCounters>,
    /// The last known location of every rule seen (for rules since removed).
    seen: BTreeMap<RuleName, RuleInfo>,
    /// Where they are saved for the next polcd (`None`: not saved).
    file: Option<PathBuf>,
}

fn map_id(map: &MapHandle) -> Option<u32> {
    map.info().ok().map(|info| info.info.id)
}

/// One tally entry as saved: the rule by name, the reason by number.
#[derive(Serialize, Deserialize)]
struct SavedCount {
    policy: Option<String>,
    rule: Option<String>,
    reason: u8,
    ingress: bool,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct SavedLive {
    map_id: u32,
    rule_slots: Vec<u32>,
    /// Rule number -> (policy, rule name).
    rules: Vec<(u32, String, String)>,
    baseline: Vec<SavedCount>,
}

#[derive(Serialize, Deserialize, Default)]
struct SavedEndpoint {
    carried: Vec<SavedCount>,
    live: Option<SavedLive>,
}

/// `STATE/counters.json`.
#[derive(Serialize, Deserialize, Default)]
struct SavedCounters {
    /// The kernel's boot id when saved: map ids mean nothing after a reboot.
    #[serde(default)]
    boot_id: String,
    endpoints: BTreeMap<String, SavedEndpoint>,
    seen: Vec<RuleInfo>,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string()
}

fn save_tally(tally: &Tally) -> Vec<SavedCount> {
    tally
        .iter()
        .map(|((rule, reason, direction), count)| SavedCount {
            policy: rule.as_ref().map(|r| r.policy.clone()),
            rule: rule.as_ref().map(|r| r.name.clone()),
            reason: *reason as u8,
            ingress: *direction == Direction::Ingress,
            packets: count.packets,
            bytes: count.bytes,
        })
        .collect()
}

fn restore_tally(saved: &[SavedCount]) -> Tally {
    let mut tally = Tally::new();
    for count in saved {
        let Some(reason) = Reason::from_u8(count.reason) else { continue };
        let rule = count.policy.clone().zip(count.rule.clone()).map(|(policy, name)| RuleName { policy, name });
        let direction = if count.ingress { Direction::Ingress } else { Direction::Egress };
        tally.entry((rule, reason, direction)).or_default().add(Count { packets: count.packets, bytes: count.bytes });
    }
    tally
}

impl Live {
    fn save(&self) -> SavedLive {
        SavedLive {
            map_id: self.map_id,
            rule_slots: self.rule_slots.clone(),
            rules: self.rules.iter().map(|(id, r)| (*id, r.policy.clone(), r.name.clone())).collect(),
            baseline: save_tally(&self.baseline),
        }
    }

    /// The array a previous polcd followed, if it still exists (its
    /// generation still pinned or running).
    fn restore(saved: &SavedLive) -> Option<Live> {
        let metrics = MapHandle::from_map_id(saved.map_id).ok()?;
        // Map ids are not reused soon (and the boot is the same), but check
        // it is a counter array with the saved slots.
        let slots = u32::try_from(saved.rule_slots.len() + 1).ok()?;
        let named = metrics.name().to_string_lossy().starts_with(METRICS_MAP);
        if !named || metrics.max_entries() < slots * COUNTERS_PER_SLOT {
            return None;
        }
        Some(Live {
            map_id: saved.map_id,
            metrics,
            rule_slots: saved.rule_slots.clone(),
            rules: saved
                .rules
                .iter()
                .map(|(id, policy, name)| (*id, RuleName { policy: policy.clone(), name: name.clone() }))
                .collect(),
            baseline: restore_tally(&saved.baseline),
        })
    }
}

impl Counters {
    /// Counters saved in `file` after every change, starting from what a
    /// previous polcd saved there (nothing if it is missing or unreadable).
    pub fn persisted(file: &Path) -> Counters {
        let mut counters = Counters { file: Some(file.to_path_buf()), ..Counters::default() };
        let Ok(text) = std::fs::read_to_string(file) else { return counters };
        let Ok(saved) = serde_json::from_str::<SavedCounters>(&text) else {
            super::daemon::log(&format!("ignoring unreadable counters in `{}`", file.display()));
            return counters;
        };
        let same_boot = saved.boot_id == boot_id();
        for (name, endpoint) in saved.endpoints {
            let live = endpoint.live.as_ref().filter(|_| same_boot).and_then(Live::restore);
            if live.is_none() && endpoint.live.is_some() {
                super::daemon::log(&format!("`{name}`: the counter array counting before the restart is gone"));
            }
            counters.endpoints.insert(name, EndpointCounters { live, carried: restore_tally(&endpoint.carried) });
        }
        counters.seen = saved.seen.into_iter().map(|info| (RuleName::of(&info), info)).collect();
        counters
    }

    /// The slot each rule counts in, in the array `endpoint` runs now (as
    /// this polcd last followed it; empty when it knows none).
    pub fn running_slots(&self, endpoint: &str) -> BTreeMap<RuleName, u16> {
        let Some(live) = self.endpoints.get(endpoint).and_then(|e| e.live.as_ref()) else { return BTreeMap::new() };
        let slots = live.rule_slots.iter().enumerate();
        slots.filter_map(|(i, id)| Some((live.rules.get(id)?.clone(), u16::try_from(i + 1).ok()?))).collect()
    }

    /// Writes what a restarted polcd needs (a temporary file renamed over
    /// the last one, so a crash leaves one or the other).
    fn save(&self) {
        let Some(file) = &self.file else { return };
        let saved = SavedCounters {
            boot_id: boot_id(),
            endpoints: self
                .endpoints
                .iter()
                .map(|(name, e)| {
                    let endpoint =
                        SavedEndpoint { carried: save_tally(&e.carried), live: e.live.as_ref().map(Live::save) };
                    (name.clone(), endpoint)
                })
                .collect(),
            seen: self.seen.values().cloned().collect(),
        };
        let text = serde_json::to_string(&saved).unwrap_or_default();
        let temporary = file.with_extension("json.tmp");
        let written = std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, file));
        if let Err(e) = written {
            super::daemon::log(&format!("cannot save counters in `{}`: {e}", file.display()));
        }
    }

    /// Follows each endpoint to the generation it runs now, folding the
    /// final counts of the one it ran before. Endpoints not listed are
    /// forgotten. Call after every change, before the next one.
    pub fn follow<'a>(&mut self, running: impl IntoIterator<Item = (&'a str, Runs<'a>)>, catalog: &Catalog) {
        let mut changed = false;
        for info in catalog.rules.values() {
            changed |= self.seen.insert(RuleName::of(info), info.clone()).as_ref() != Some(info);
        }
        let mut listed = Vec::new();
        for (name, runs) in running {
            listed.push(name.to_string());
            let entry = self.endpoints.entry(name.to_string()).or_default();
            let loaded = match runs {
                // The array restored for it counts on; its final values are
                // read when a generation of this polcd replaces it.
                Runs::Adopted if entry.live.is_some() => continue,
                Runs::Loaded(loaded) => Some(loaded),
                Runs::Adopted | Runs::Nothing => None,
            };
            let current = loaded.and_then(|l| l.map(METRICS_MAP).ok()).and_then(|m| Some((map_id(&m)?, m)));
            let slots: Vec<u32> = loaded.map(|l| l.rule_slots().to_vec()).unwrap_or_default();
            let rules: BTreeMap<u32, RuleName> =
                slots.iter().filter_map(|id| catalog.rule(*id).map(|info| (*id, RuleName::of(info)))).collect();
            let same_map = entry.live.as_ref().map(|l| l.map_id) == current.as_ref().map(|(id, _)| *id);
            // A table-only swap keeps the array (same map) but may map its
            // slots to other rules.
            let same_mapping = entry.live.as_ref().is_some_and(|l| l.rule_slots == slots && l.rules == rules);
            if same_map && (entry.live.is_none() || same_mapping) {
                continue;
            }
            changed = true;
            if let Some(old) = entry.live.take() {
                old.read(&mut entry.carried);
            }
            if let Some((map_id, metrics)) = current {
                let mut live = Live { map_id, metrics, rule_slots: slots, rules, baseline: Tally::new() };
                if same_map {
                    let mut baseline = Tally::new();
                    live.read_raw(&mut baseline);
                    live.baseline = baseline;
                }
                entry.live = Some(live);
            }
        }
        let before = self.endpoints.len();
        self.endpoints.retain(|name, _| listed.contains(name));
        changed |= self.endpoints.len() != before;
        if changed {
            self.save();
        }
    }

    /// The counts now: what was carried plus the running generations'.
    pub fn read(&self, catalog: &Catalog) -> Stats {
        let mut stats = Stats::default();
        let mut by_rule: BTreeMap<RuleName, Count> = BTreeMap::new();
        for (name, counters) in &self.endpoints {
            let mut tally = counters.carried.clone();
            if let Some(live) = &counters.live {
                live.read(&mut tally);
            }
            let mut endpoint = EndpointStats {
                name: name.clone(),
                identity: catalog.endpoint_identities.get(name).copied().unwrap_or(0),
                ingress: DirectionStats::default(),
                egress: DirectionStats::default(),
            };
            for ((rule, reason, direction), count) in tally {
                let side = match direction {
                    Direction::Ingress => &mut endpoint.ingress,
                    Direction::Egress => &mut endpoint.egress,
                };
                if reason.is_drop() { &mut side.dropped } else { &mut side.allowed }.add(count);
                side.reasons.entry(reason.name().to_string()).or_default().add(count);
                if let Some(rule) = rule {
                    by_rule.entry(rule).or_default().add(count);
                }
            }
            stats.endpoints.push(endpoint);
        }
        let rule_stats = |info: &RuleInfo, count: Count| RuleStats {
            rule: info.name.clone(),
            policy: info.policy.clone(),
            action: info.action.clone(),
            direction: info.direction.clone(),
            file: info.file.clone(),
            line: info.line,
            packets: count.packets,
            bytes: count.bytes,
        };
        for info in catalog.rules.values() {
            let count = by_rule.remove(&RuleName::of(info)).unwrap_or_default();
            stats.rules.push(rule_stats(info, count));
        }
        for (rule, count) in by_rule {
            if let Some(info) = self.seen.get(&rule) {
                stats.rules.push(rule_stats(info, count));
            }
        }
        stats
    }
}

/// `polcd stats` as text: one line per endpoint and direction, then one per rule.
pub fn to_text(stats: &Stats) -> String {
    let mut endpoints = vec![vec![
        "endpoint".to_string(),
        "identity".into(),
        "direction".into(),
        "allowed".into(),
        "bytes".into(),
        "dropped".into(),
        "bytes".into(),
        "drops by reason".into(),
    ]];
    for e in &stats.endpoints {
        for (direction, side) in [("ingress", &e.ingress), ("egress", &e.egress)] {
            let drops: Vec<String> =
                side.drops().map(|(reason, count)| format!("{reason} {}", count.packets)).collect();
            endpoints.push(vec![
                e.name.clone(),
                e.identity.to_string(),
                direction.to_string(),
                side.allowed.packets.to_string(),
                side.allowed.bytes.to_string(),
                side.dropped.packets.to_string(),
                side.dropped.bytes.to_string(),
                drops.join(", "),
            ]);
        }
    }
    let mut rules = vec![vec![
        "rule".to_string(),
        "policy".into(),
        "action".into(),
        "direction".into(),
        "location".into(),
        "packets".into(),
        "bytes".into(),
    ]];
    for r in &stats.rules {
        rules.push(vec![
            r.rule.clone(),
            r.policy.clone(),
            r.action.clone(),
            r.direction.clone(),
            format!("{}:{}", r.file, r.line),
            r.packets.to_string(),
            r.bytes.to_string(),
        ]);
    }
    format!("{}\n{}", table(&endpoints), table(&rules))
}

/// Columns padded to their widest cell; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c + 1 == row.len() {
                        cell.clone()
                    } else {
                        format!("{cell:<width$}", width = widths[c])
                    }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
