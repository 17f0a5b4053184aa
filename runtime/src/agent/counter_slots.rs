//! Counter slots that stay with their rule across policy versions.
//!
//! The datapath counts per rule in an array indexed by the rule's counter
//! slot, and a connection's conntrack entry keeps the slot of the rule that
//! allowed it: the connection's later packets (established, replies) count
//! there, whatever the tables say by then. polc numbers the slots of an
//! endpoint densely in rule order, so a rule written above the others would
//! move them, and a connection opened before the change would count for
//! whichever rule took its old slot. Before an artifact is staged or loaded,
//! polcd renumbers its slots so that every rule the endpoint counts now keeps
//! its slot; new rules take the lowest free ones. A free slot may be one of
//! a removed rule: its remaining connections then count for the new rule.

use super::stats::RuleName;
use crate::datapath::METRICS_MAP;
use crate::swap::Artifact;
use polc::codegen::bundle::metrics_entries;
use std::collections::{BTreeMap, BTreeSet};

/// Renumbers `artifact`'s counter slots: a rule that has a slot in
/// `running` (the slots the endpoint's running array counts in, by rule)
/// keeps it, the others take the lowest slots no kept rule has. The policy
/// entries, the slot -> rule id list (0 for a slot no rule has) and the
/// counter array's size follow. `rule_name` names the artifact's rule ids;
/// a rule it cannot name is treated as new.
pub fn keep_slots(
    artifact: &mut Artifact,
    running: &BTreeMap<RuleName, u16>,
    rule_name: impl Fn(u32) -> Option<RuleName>,
) {
    if running.is_empty() {
        return;
    }
    let names: Vec<Option<RuleName>> = artifact.rule_slots.iter().map(|id| rule_name(*id)).collect();
    let kept: Vec<Option<u16>> = names.iter().map(|name| name.as_ref().and_then(|n| running.get(n).copied())).collect();
    let taken: BTreeSet<u16> = kept.iter().flatten().copied().collect();
    let mut free = (1..=u16::MAX).filter(|slot| !taken.contains(slot));
    // new_slot[old slot - 1]; slot 0 (no rule) stays 0.
    let new_slot: Vec<u16> = kept.iter().map(|kept| kept.or_else(|| free.next()).unwrap_or(0)).collect();
    // The slots of removed rules stay in the array (their connections still
    // count there, for no rule), so it covers the running highest slot.
    let running_highest = running.values().copied().max().unwrap_or(0);
    let highest = new_slot.iter().copied().max().unwrap_or(0).max(running_highest);
    let unchanged = new_slot.iter().enumerate().all(|(i, slot)| usize::from(*slot) == i + 1);
    if unchanged && new_slot.len() >= usize::from(highest) {
        return;
    }
    let mut rule_slots = vec![0; usize::from(highest)];
    for (old, slot) in new_slot.iter().enumerate() {
        if *slot != 0 {
            rule_slots[usize::from(*slot) - 1] = artifact.rule_slots[old];
        }
    }
    for entries in [artifact.ingress.as_mut(), artifact.egress.as_mut()].into_iter().flatten() {
        for interval in entries.iter_mut().flat_map(|e| e.intervals.iter_mut()) {
            if interval.slot != 0 {
                interval.slot = new_slot.get(usize::from(interval.slot) - 1).copied().unwrap_or(0);
            }
        }
    }
    artifact.rule_slots = rule_slots;
    let entries = metrics_entries(artifact.rule_slots.len());
    match artifact.map_sizes.iter_mut().find(|(name, _)| name == METRICS_MAP) {
        Some((_, size)) => *size = entries,
        None => artifact.map_sizes.push((METRICS_MAP.to_string(), entries)),
    }
}

/// Rule names by rule id, borrowed (a change's build looks up a few ids per
/// endpoint; cloning every rule's names on each change cost ~0.5 ms at
/// 10,000 rules).
pub struct RuleNames<'a>(Vec<(u32, &'a str, &'a str)>);

impl<'a> RuleNames<'a> {
    /// From (id, policy, rule name) triples.
    pub fn new(rules: impl Iterator<Item = (u32, &'a str, &'a str)>) -> RuleNames<'a> {
        let mut by_id: Vec<_> = rules.collect();
        by_id.sort_unstable_by_key(|(id, _, _)| *id);
        RuleNames(by_id)
    }

    pub fn name(&self, id: u32) -> Option<RuleName> {
        let at = self.0.binary_search_by_key(&id, |(id, _, _)| *id).ok()?;
        let (_, policy, name) = self.0[at];
        Some(RuleName { policy: policy.to_string(), name: name.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc::codegen::entries::{EntryAction, EntryInterval, EntryKind, PolicyEntry};
    use std::path::PathBuf;

    fn name(rule: &str) -> RuleName {
        RuleName { policy: "p".into(), name: rule.into() }
    }

    /// An artifact whose ingress has one entry per rule id in `ids`, each
    /// with one interval of that rule, slots dense in id order (as polc numbers them).
    fn artifact(ids: &[u32]) -> Artifact {
        let entries = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PolicyEntry {
                identity: 256 + id,
                proto: 6,
                kind: EntryKind::Other,
                bucket: 0,
                split: false,
                intervals: vec![EntryInterval {
                    low: 0,
                    high: 65535,
                    action: EntryAction::Allow,
                    rule: *id,
                    slot: i as u16 + 1,
                }],
            })
            .collect();
        Artifact {
            endpoint: "app1".into(),
            object: PathBuf::from("x.o"),
            constants: Vec::new(),
            map_sizes: vec![(METRICS_MAP.to_string(), metrics_entries(ids.len()))],
            rule_slots: ids.to_vec(),
            ingress: Some(entries),
            egress: None,
            direction_shapes: None,
        }
    }

    /// Rule id -> the slot its interval counts in.
    fn slots(artifact: &Artifact) -> BTreeMap<u32, u16> {
        let entries = artifact.ingress.iter().flatten();
        entries.flat_map(|e| e.intervals.iter()).map(|i| (i.rule, i.slot)).collect()
    }

    #[test]
    fn a_rule_written_above_the_others_does_not_move_them() {
        // Running: web 1, deny 2. New version: dns (id 1) above web (2) and deny (3).
        let running = BTreeMap::from([(name("web"), 1), (name("deny"), 2)]);
        let mut new = artifact(&[1, 2, 3]);
        let names = BTreeMap::from([(1, name("dns")), (2, name("web")), (3, name("deny"))]);
        keep_slots(&mut new, &running, |id| names.get(&id).cloned());
        assert_eq!(slots(&new), BTreeMap::from([(1, 3), (2, 1), (3, 2)]));
        assert_eq!(new.rule_slots, vec![2, 3, 1], "slot 1 is web's (id 2), 2 deny's, 3 dns'");
        assert_eq!(new.map_sizes, vec![(METRICS_MAP.to_string(), metrics_entries(3))]);
    }

    #[test]
    fn a_removed_rule_leaves_a_gap_that_a_new_rule_fills() {
        let running = BTreeMap::from([(name("a"), 1), (name("b"), 2), (name("c"), 3)]);
        // a removed: b and c keep 2 and 3, slot 1 has no rule.
        let mut without_a = artifact(&[1, 2]);
        let names = BTreeMap::from([(1, name("b")), (2, name("c"))]);
        keep_slots(&mut without_a, &running, |id| names.get(&id).cloned());
        assert_eq!(without_a.rule_slots, vec![0, 1, 2]);
        assert_eq!(slots(&without_a), BTreeMap::from([(1, 2), (2, 3)]));
        // a removed, d added: d takes slot 1.
        let mut with_d = artifact(&[1, 2, 3]);
        let names = BTreeMap::from([(1, name("b")), (2, name("c")), (3, name("d"))]);
        keep_slots(&mut with_d, &running, |id| names.get(&id).cloned());
        assert_eq!(with_d.rule_slots, vec![3, 1, 2]);
        assert_eq!(with_d.map_sizes, vec![(METRICS_MAP.to_string(), metrics_entries(3))]);
    }

    #[test]
    fn the_slot_of_a_removed_last_rule_stays_in_the_array() {
        let running = BTreeMap::from([(name("a"), 1), (name("b"), 2), (name("c"), 3)]);
        let mut without_c = artifact(&[1, 2]);
        let names = BTreeMap::from([(1, name("a")), (2, name("b"))]);
        keep_slots(&mut without_c, &running, |id| names.get(&id).cloned());
        assert_eq!(slots(&without_c), BTreeMap::from([(1, 1), (2, 2)]));
        assert_eq!(without_c.rule_slots, vec![1, 2, 0], "slot 3 counts c's connections, for no rule");
        assert_eq!(without_c.map_sizes, vec![(METRICS_MAP.to_string(), metrics_entries(3))]);
    }

    #[test]
    fn nothing_running_or_nothing_moved_leaves_the_artifact_as_built() {
        let names = BTreeMap::from([(1, name("a")), (2, name("b"))]);
        let built = artifact(&[1, 2]);
        for running in [BTreeMap::new(), BTreeMap::from([(name("a"), 1), (name("b"), 2)])] {
            let mut same = artifact(&[1, 2]);
            keep_slots(&mut same, &running, |id| names.get(&id).cloned());
            assert_eq!((slots(&same), &same.rule_slots), (slots(&built), &built.rule_slots));
        }
    }
}
