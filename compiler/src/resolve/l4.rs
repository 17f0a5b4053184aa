//! From the `on` clauses of the rules that apply to one peer to an
//! [`L4Table`]: disjoint sorted intervals per protocol, each with its final
//! decision (deny precedence resolved), adjacent equal decisions merged.

use crate::ir::{Decision, L4Table, PortEntry};
use crate::sema::model::{L4Match, PortMatch, Proto, Rule};
use crate::syntax::ast::Action;
use std::collections::{BTreeMap, BTreeSet};

/// Named ports of a destination: name -> the (protocol, port) pairs it stands for.
/// One pair for an endpoint; for an identity, the union over its endpoints.
pub type NamedPorts = BTreeMap<String, BTreeSet<(Proto, u16)>>;

/// The highest "port" of a protocol: the port, or the ICMP type.
fn max_port(proto: Proto) -> u16 {
    if proto.is_icmp() {
        u8::MAX.into()
    } else {
        u16::MAX
    }
}

/// Lower sorts first: denies before allows, then by rule id.
type Priority = (bool, u32);

fn priority(d: Decision) -> Priority {
    (d.action == Action::Allow, d.rule.0)
}

/// Decisions of several rules, accumulated and then resolved into a table.
#[derive(Debug, Default)]
pub struct L4Builder {
    intervals: BTreeMap<u8, Vec<(u16, u16, Decision)>>,
    other: Option<Decision>,
}

impl L4Builder {
    /// Adds what `rule` says about a destination with these named ports.
    pub fn add_rule(&mut self, rule: &Rule, named: &NamedPorts) {
        let decision = Decision { action: rule.action, rule: rule.id };
        for l4 in &rule.l4 {
            self.add_match(l4, named, decision);
        }
    }

    fn add_match(&mut self, l4: &L4Match, named: &NamedPorts, decision: Decision) {
        match (&l4.ports, l4.proto) {
            (PortMatch::All, None) => {
                for proto in Proto::ALL {
                    self.add(proto, 0, max_port(proto), decision);
                }
                self.other = Some(self.other.map_or(decision, |d| best(d, decision)));
            }
            (PortMatch::All, Some(proto)) => self.add(proto, 0, max_port(proto), decision),
            (PortMatch::Range { low, high }, Some(proto)) => self.add(proto, *low, *high, decision),
            (PortMatch::Range { low, high }, None) => {
                for proto in Proto::WITH_PORTS {
                    self.add(proto, *low, *high, decision);
                }
            }
            (PortMatch::Named(name), wanted) => {
                for (proto, port) in named.get(name).into_iter().flatten() {
                    if wanted.is_none_or(|w| w == *proto) {
                        self.add(*proto, *port, *port, decision);
                    }
                }
            }
        }
    }

    fn add(&mut self, proto: Proto, low: u16, high: u16, decision: Decision) {
        self.intervals.entry(proto.number()).or_default().push((low, high, decision));
    }

    pub fn build(self) -> L4Table {
        let protocols = self
            .intervals
            .into_iter()
            .map(|(proto, intervals)| (proto, resolve_intervals(&intervals)))
            .filter(|(_, entries)| !entries.is_empty())
            .collect();
        L4Table { protocols, other: self.other }
    }
}

/// The better of two decisions for the same packets.
fn best(a: Decision, b: Decision) -> Decision {
    if priority(a) <= priority(b) {
        a
    } else {
        b
    }
}

/// Overlapping intervals with decisions -> disjoint sorted intervals with
/// the best decision covering each, adjacent equal decisions merged.
/// A sweep over interval starts and ends, keeping the covering decisions.
fn resolve_intervals(intervals: &[(u16, u16, Decision)]) -> Vec<PortEntry> {
    // (position, +1 start / -1 end, decision); an interval ends after `high`.
    let mut events: Vec<(u32, bool, Decision)> = Vec::with_capacity(intervals.len() * 2);
    for (low, high, decision) in intervals {
        events.push((u32::from(*low), true, *decision));
        events.push((u32::from(*high) + 1, false, *decision));
    }
    events.sort_unstable_by_key(|(pos, _, d)| (*pos, priority(*d)));
    let mut active: BTreeMap<Priority, (usize, Decision)> = BTreeMap::new();
    let mut out: Vec<PortEntry> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let pos = events[i].0;
        while i < events.len() && events[i].0 == pos {
            let (_, start, decision) = events[i];
            let key = priority(decision);
            if start {
                active.entry(key).or_insert((0, decision)).0 += 1;
            } else if let Some(slot) = active.get_mut(&key) {
                slot.0 -= 1;
                if slot.0 == 0 {
                    active.remove(&key);
                }
            }
            i += 1;
        }
        let Some(next) = events.get(i).map(|e| e.0) else {
            break;
        };
        let Some((_, (_, decision))) = active.first_key_value() else {
            continue;
        };
        // Positions are at most 65536 and `next > pos`, so these fit in u16.
        let (low, high) = (pos as u16, (next - 1) as u16);
        match out.last_mut() {
            Some(last) if last.decision == *decision && u32::from(last.high) + 1 == pos => last.high = high,
            _ => out.push(PortEntry { low, high, decision: *decision }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sema::model::RuleId;

    fn d(action: Action, rule: u32) -> Decision {
        Decision { action, rule: RuleId(rule) }
    }

    fn entries(v: &[PortEntry]) -> Vec<(u16, u16, Action, u32)> {
        v.iter().map(|e| (e.low, e.high, e.decision.action, e.decision.rule.0)).collect()
    }

    #[test]
    fn deny_wins_then_lowest_rule_and_equal_neighbours_merge() {
        let allow1 = d(Action::Allow, 1);
        let allow2 = d(Action::Allow, 2);
        let deny9 = d(Action::Deny, 9);
        let got = resolve_intervals(&[(80, 90, allow2), (85, 100, allow1), (88, 88, deny9), (101, 200, allow1)]);
        assert_eq!(
            entries(&got),
            vec![
                (80, 84, Action::Allow, 2),
                (85, 87, Action::Allow, 1),
                (88, 88, Action::Deny, 9),
                (89, 200, Action::Allow, 1),
            ]
        );
        let full = resolve_intervals(&[(0, u16::MAX, allow1), (0, u16::MAX, allow2)]);
        assert_eq!(entries(&full), vec![(0, u16::MAX, Action::Allow, 1)]);
        assert_eq!(
            entries(&resolve_intervals(&[(5, 5, allow1), (7, 7, allow1)])),
            vec![(5, 5, Action::Allow, 1), (7, 7, Action::Allow, 1)]
        );
    }

    #[test]
    fn named_ports_follow_the_protocol() {
        let rule = |proto: Option<Proto>| Rule {
            id: RuleId(3),
            name: "r".into(),
            policy: "p".into(),
            action: Action::Allow,
            direction: crate::syntax::ast::Direction::Ingress,
            peers: vec![],
            l4: vec![L4Match { proto, ports: PortMatch::Named("http".into()) }],
            span: Default::default(),
            peer_spans: vec![],
            l4_spans: vec![],
        };
        let named: NamedPorts = [("http".to_string(), BTreeSet::from([(Proto::Tcp, 8080), (Proto::Udp, 53)]))].into();
        let mut b = L4Builder::default();
        b.add_rule(&rule(Some(Proto::Tcp)), &named);
        let table = b.build();
        assert_eq!(table.protocols.keys().copied().collect::<Vec<_>>(), vec![6]);
        assert!(table.lookup(6, 8080).is_some());
        let mut b = L4Builder::default();
        b.add_rule(&rule(None), &named);
        assert_eq!(b.build().entry_count(), 2, "`any/http` takes each protocol from the name");
        let mut b = L4Builder::default();
        b.add_rule(&rule(Some(Proto::Tcp)), &NamedPorts::new());
        assert_eq!(b.build(), L4Table::default(), "an unknown name matches nothing");
    }
}
