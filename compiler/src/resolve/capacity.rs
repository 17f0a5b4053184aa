//! The per-endpoint capacity check: a policy that would need more entries
//! than an endpoint's map holds is an error, never a silent truncation.

use crate::ir::{DirectionTable, EndpointPolicy};
use crate::sema::model::{PolicySet, RuleId};
use std::collections::BTreeMap;
use std::fmt;

/// How many rules an over-capacity error names.
const RULES_NAMED: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityError {
    pub endpoint: String,
    pub entries: usize,
    pub limit: usize,
    /// The rules deciding the most entries, most first.
    pub top_rules: Vec<RuleUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleUsage {
    pub rule: RuleId,
    pub name: String,
    pub policy: String,
    /// Entries whose decision is this rule's.
    pub entries: usize,
    /// Where the rule is written (for `file:line:col`).
    pub span: Option<crate::syntax::Span>,
}

impl std::error::Error for CapacityError {}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "endpoint `{}` needs {} policy entries, more than the limit of {}",
            self.endpoint, self.entries, self.limit
        )?;
        let named: Vec<String> = self
            .top_rules
            .iter()
            .map(|r| format!("rule `{}` of policy `{}` ({} entries)", r.name, r.policy, r.entries))
            .collect();
        if !named.is_empty() {
            write!(f, "; most come from {}", named.join(", "))?;
        }
        Ok(())
    }
}

/// Entries decided by each rule, over both directions.
fn usage(tables: [&DirectionTable; 2]) -> BTreeMap<RuleId, usize> {
    let mut by_rule = BTreeMap::new();
    for l4 in tables.iter().flat_map(|t| t.tables.values()) {
        for entry in l4.protocols.values().flatten() {
            *by_rule.entry(entry.decision.rule).or_insert(0) += 1;
        }
        if let Some(d) = l4.other {
            *by_rule.entry(d.rule).or_insert(0) += 1;
        }
    }
    by_rule
}

pub fn check(endpoint: &EndpointPolicy, set: &PolicySet, limit: usize) -> Result<(), Box<CapacityError>> {
    let entries = endpoint.ingress.entry_count() + endpoint.egress.entry_count();
    if entries <= limit {
        return Ok(());
    }
    let mut ranked: Vec<(RuleId, usize)> = usage([&endpoint.ingress, &endpoint.egress]).into_iter().collect();
    ranked.sort_by_key(|(rule, count)| (std::cmp::Reverse(*count), *rule));
    let top_rules = ranked
        .into_iter()
        .take(RULES_NAMED)
        .map(|(rule, entries)| {
            let found = set.rule(rule);
            RuleUsage {
                rule,
                name: found.map_or_else(|| format!("#{}", rule.0), |r| r.name.clone()),
                policy: found.map(|r| r.policy.clone()).unwrap_or_default(),
                entries,
                span: found.map(|r| r.span),
            }
        })
        .collect();
    Err(Box::new(CapacityError { endpoint: endpoint.name.clone(), entries, limit, top_rules }))
}
