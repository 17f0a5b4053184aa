//! Resolution benchmark: 1,000 endpoints with 300 distinct label sets and
//! 2,000 rules. Measures a full resolution and the incremental update after
//! one changed rule (recomputation plus impact set).
//!
//! Run: `cargo bench -p polc --bench resolve` (release profile). Figures go
//! in BENCHMARKS.md.

use polc::driver;
use polc::resolve::{IdentityLock, ResolveConfig, Resolver};
use polc::sema::model::{PolicySet, PortMatch};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const ENDPOINTS: usize = 1000;
const LABEL_SETS: usize = 300;
const APPS: usize = 100;
const TIERS: [&str; 3] = ["web", "api", "db"];
const POLICIES: usize = 200;
const RULES_PER_SECTION: usize = 5;

/// A deterministic policy set: each app has two policies (one per tier pair),
/// each with five ingress and five egress rules mixing label selectors,
/// entities, CIDRs with exceptions, ranges and named ports.
fn workload() -> String {
    let mut out = String::from("node { ipv4 10.0.0.1 }\n");
    for e in 0..ENDPOINTS {
        let set = e % LABEL_SETS;
        let (app, tier) = (set % APPS, TIERS[set / APPS]);
        let _ = writeln!(
            out,
            "endpoint ep{e} {{ labels {{app=app{app}, tier={tier}, env=prod}} ipv4 10.{}.{}.{} port http = tcp/{} port metrics = tcp/9100 }}",
            1 + e / 65536,
            (e / 256) % 256,
            e % 256,
            8000 + set % 7
        );
    }
    for p in 0..POLICIES {
        let app = p % APPS;
        let tier = TIERS[p % 3];
        let _ = writeln!(out, "policy p{p} {{\n  select {{app=app{app}}}\n  ingress {{");
        for r in 0..RULES_PER_SECTION {
            let peer_app = (app + 1 + r * 7) % APPS;
            let rule = match r {
                0 => format!("allow i{r}: from {{app=app{peer_app}, tier={tier}}} on tcp/{}", 1000 + p),
                1 => format!("allow i{r}: from {{tier in (web, api)}} on tcp/http"),
                2 => format!("allow i{r}: from cluster on tcp/9100-9199"),
                3 => format!("deny i{r}: from 192.168.{}.0/24 except (192.168.{}.128/25)", p % 256, p % 256),
                _ => format!("allow i{r}: from {{app=app{peer_app}}}, world on tcp/{}-{}", 2000 + p, 2010 + p),
            };
            let _ = writeln!(out, "    {rule}");
        }
        out.push_str("  }\n  egress {\n");
        for r in 0..RULES_PER_SECTION {
            let peer_app = (app + 3 + r * 11) % APPS;
            let rule = match r {
                0 => format!("allow e{r}: to {{app=app{peer_app}}} on tcp/http, tcp/metrics"),
                1 => format!("allow e{r}: to host on udp/53, tcp/53"),
                2 => {
                    format!("allow e{r}: to 172.{}.0.0/16 except (172.{}.1.0/24) on tcp/443", 16 + p % 16, 16 + p % 16)
                }
                3 => format!("deny e{r}: to {{app=app{peer_app}, tier=db}} on tcp/5432"),
                _ => format!("allow e{r}: to world on tcp/{}", 3000 + p),
            };
            let _ = writeln!(out, "    {rule}");
        }
        out.push_str("  }\n}\n");
    }
    out
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The set with one rule's port changed (the `i0` rule of policy `p{policy}`).
fn with_changed_rule(set: &PolicySet, policy: usize, port: u16) -> PolicySet {
    let mut changed = set.clone();
    let rules = changed.policies[policy].ingress.as_mut().expect("ingress");
    rules[0].l4[0].ports = PortMatch::Range { low: port, high: port };
    changed
}

fn main() {
    let text = workload();
    let started = Instant::now();
    let frontend = driver::check_text("bench.pol", &text);
    let front_time = started.elapsed();
    assert!(!frontend.has_errors(), "the workload must check");
    let set = frontend.checked;
    let rules = set.rules().count();
    println!(
        "workload: {} endpoints, {} label sets, {} policies, {rules} rules",
        set.inventory.endpoints.len(),
        LABEL_SETS,
        set.policies.len()
    );
    println!("front end (parse + check): {:.1} ms", front_time.as_secs_f64() * 1e3);

    let config = ResolveConfig::default();
    let mut full_times = Vec::new();
    let mut resolver = None;
    for _ in 0..5 {
        let input = set.clone();
        let started = Instant::now();
        let r = Resolver::new(input, &IdentityLock::default(), config.clone()).expect("resolves");
        full_times.push(started.elapsed());
        resolver = Some(r);
    }
    let mut resolver = resolver.expect("ran");
    let entries: usize =
        resolver.resolved().endpoints.iter().map(|e| e.ingress.entry_count() + e.egress.entry_count()).sum();
    let most = resolver
        .resolved()
        .endpoints
        .iter()
        .map(|e| e.ingress.entry_count() + e.egress.entry_count())
        .max()
        .unwrap_or(0);
    println!(
        "full resolution: median {:.1} ms of 5 (min {:.1} ms)",
        median(full_times.clone()).as_secs_f64() * 1e3,
        full_times.iter().min().expect("runs").as_secs_f64() * 1e3
    );
    println!(
        "  {} identities, {} ipcache entries, {entries} table entries ({most} at most per endpoint)",
        resolver.resolved().identities.len(),
        resolver.resolved().ipcache.len()
    );
    println!("  impact graph: {} nodes, {} edges", resolver.graph().node_count(), resolver.graph().edge_count());

    // One changed rule at a time, in 40 different policies, each edit then undone.
    let mut update_times = Vec::new();
    let mut recomputed = Vec::new();
    for i in 0..40 {
        let policy = (i * 37) % POLICIES;
        let edited = with_changed_rule(&set, policy, 60000);
        let original = set.clone();
        let started = Instant::now();
        let changes = resolver.update(edited).expect("update");
        update_times.push(started.elapsed());
        recomputed.push((changes.recomputed, changes.changed_endpoints.len(), changes.skipped));
        let started = Instant::now();
        resolver.update(original).expect("undo");
        update_times.push(started.elapsed());
    }
    let worst = *update_times.iter().max().expect("runs");
    let (r, c, s) = recomputed[0];
    println!(
        "one changed rule: median {:.2} ms, worst {:.2} ms over {} updates",
        median(update_times).as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        80
    );
    println!("  e.g. {r} endpoints recomputed, {c} changed, {s} skipped");

    // One endpoint comes (an existing label set) and goes again.
    let mut grown = set.clone();
    let mut newcomer = grown.inventory.endpoints[0].clone();
    newcomer.name = "newcomer".into();
    newcomer.ipv4 = Some(std::net::Ipv4Addr::new(10, 250, 0, 1));
    grown.inventory.endpoints.push(newcomer);
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..20 {
        let (g, o) = (grown.clone(), set.clone());
        let started = Instant::now();
        last = Some(resolver.update(g).expect("update"));
        times.push(started.elapsed());
        let started = Instant::now();
        resolver.update(o).expect("undo");
        times.push(started.elapsed());
    }
    let last = last.expect("ran");
    println!(
        "one endpoint added or removed: median {:.2} ms, worst {:.2} ms over 40 updates ({} recomputed, {} changed)",
        median(times.clone()).as_secs_f64() * 1e3,
        times.iter().max().expect("runs").as_secs_f64() * 1e3,
        last.recomputed,
        last.changed_endpoints.len()
    );
}
