//! Checks over the AST, as named passes, producing the checked policy set
//! ([`model`]) that resolution, the evaluator and codegen consume.
//!
//! The pass order is declared once, in [`passes`]. Every pass runs even
//! after another reported errors, so one run reports all it can; later
//! stages (resolution, codegen) run only on an error-free set.

pub mod icmp;
pub mod labels;
pub mod lower;
pub mod model;
pub mod warnings;

use crate::diag::Diagnostics;
use crate::syntax::ast::Module;
use crate::syntax::SourceMap;

/// One check pass: reads the modules (and what earlier passes built) and reports diagnostics.
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&mut Context<'_>),
    /// Whether it can report errors (else warnings only).
    pub reports_errors: bool,
}

/// What passes share: the input, the checked set being built, the diagnostics.
pub struct Context<'a> {
    pub sources: &'a SourceMap,
    pub modules: &'a [Module],
    pub checked: model::PolicySet,
    pub diagnostics: Diagnostics,
}

/// The check passes, in order.
pub fn passes() -> &'static [Pass] {
    &[
        Pass { name: "lower", run: lower::run, reports_errors: true },
        Pass { name: "warnings", run: warnings::run, reports_errors: false },
    ]
}

/// Runs every pass; the checked set is usable only when there are no errors.
pub fn check(sources: &SourceMap, modules: &[Module]) -> (model::PolicySet, Diagnostics) {
    run_passes(sources, modules, passes())
}

/// Only the passes that can report errors: the same checked set and errors
/// as [`check`], without the warnings-only passes' work. For a caller that
/// uses the set when it has no errors and shows nothing else then (polcd's
/// reload; on errors it checks again with [`check`] to show everything).
pub fn check_for_errors(sources: &SourceMap, modules: &[Module]) -> (model::PolicySet, Diagnostics) {
    run_passes(sources, modules, passes().iter().filter(|p| p.reports_errors))
}

fn run_passes<'p>(
    sources: &SourceMap,
    modules: &[Module],
    passes: impl IntoIterator<Item = &'p Pass>,
) -> (model::PolicySet, Diagnostics) {
    let mut cx =
        Context { sources, modules, checked: model::PolicySet::default(), diagnostics: Diagnostics::default() };
    for pass in passes {
        (pass.run)(&mut cx);
    }
    (cx.checked, cx.diagnostics)
}
