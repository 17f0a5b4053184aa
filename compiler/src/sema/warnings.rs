//! The `warnings` pass: rules and policies that are valid but can never
//! decide anything, over the checked set built by `lower`.

use super::Context;
use crate::diag::{codes, Diagnostic};

pub fn run(cx: &mut Context<'_>) {
    policies_selecting_nothing(cx);
}

/// W0003: with an inventory present, a policy that selects none of its endpoints.
fn policies_selecting_nothing(cx: &mut Context<'_>) {
    let inventory = &cx.checked.inventory;
    if inventory.endpoints.is_empty() {
        return; // a policy-only set: endpoints arrive at run time
    }
    for policy in &cx.checked.policies {
        if !inventory.endpoints.iter().any(|e| policy.selector.matches(&e.labels)) {
            cx.diagnostics.push(
                Diagnostic::warning(
                    codes::POLICY_SELECTS_NOTHING,
                    policy.span,
                    format!("policy `{}` selects no endpoint of the inventory", policy.name),
                )
                .with_help("check its `select` labels against the endpoints' `labels`"),
            );
        }
    }
}
