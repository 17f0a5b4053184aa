//! Benchmark: parse + check of a generated policy set of 10,000 rules.
//!
//! `cargo bench -p polc --bench check` generates the set into a temporary
//! directory, then times `driver::load` (read, parse, every check pass) over
//! it several times and prints the fastest and the median run. The target is
//! under 1 s in release; BENCHMARKS.md records the figure.
//!
//! `cargo bench -p polc --bench check -- --write DIR` only writes the set to
//! DIR (to try `polc check DIR` by hand).

use polc::driver;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RULES: usize = 10_000;
const TEAMS: usize = 25;
const SERVICES_PER_TEAM: usize = 10;
const REPLICAS: usize = 2;
const RUNS: usize = 7;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--write") {
        let Some(dir) = args.get(i + 1) else {
            eprintln!("usage: check --write DIR");
            std::process::exit(2);
        };
        let written = generate(Path::new(dir)).unwrap_or_else(|e| fail(&format!("cannot write `{dir}`: {e}")));
        println!("wrote {written} rules to {dir}");
        return;
    }
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run passes
    // nothing and only checks that the bench still works, on a small set.
    let full = args.iter().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("no temporary directory: {e}")));
    let written = generate(dir.path()).unwrap_or_else(|e| fail(&format!("cannot write the policy set: {e}")));
    let runs = if full { RUNS } else { 1 };

    let mut times: Vec<Duration> = Vec::new();
    let mut summary = String::new();
    for _ in 0..runs {
        let start = Instant::now();
        let frontend = driver::load(&[dir.path().to_path_buf()]).unwrap_or_else(|e| fail(&e.to_string()));
        times.push(start.elapsed());
        let rules = frontend.checked.rules().count();
        if frontend.has_errors() || rules != written {
            let sorted = frontend.diagnostics.sorted();
            let first =
                sorted.iter().find(|d| d.is_error()).map(|d| polc::diag::render::render_text(&frontend.sources, d));
            fail(&format!(
                "generated set checked to {rules} rules (wrote {written}); first error:\n{}",
                first.unwrap_or_default()
            ));
        }
        summary = format!(
            "{rules} rules, {} policies, {} endpoints, {} files, {} warnings",
            frontend.checked.policies.len(),
            frontend.checked.inventory.endpoints.len(),
            frontend.sources.files().count(),
            frontend.diagnostics.warning_count(),
        );
    }
    times.sort();
    println!(
        "parse + check of {summary}: min {:.1} ms, median {:.1} ms ({runs} runs)",
        ms(times[0]),
        ms(times[times.len() / 2]),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fail(message: &str) -> ! {
    eprintln!("bench failed: {message}");
    std::process::exit(1);
}

/// A small deterministic generator (xorshift), so every run checks the same set.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Writes a realistic policy set of exactly [`RULES`] rules into `dir`:
/// shared definitions, an inventory of `TEAMS * SERVICES_PER_TEAM` services
/// with replicas, and one file per team with a policy per service. Returns
/// the number of rules written.
fn generate(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("defs.pol"), definitions())?;
    std::fs::write(dir.join("endpoints.pol"), inventory())?;
    let policies = TEAMS * SERVICES_PER_TEAM;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = 0;
    for team in 0..TEAMS {
        let mut text = format!("# Policies of team {team}.\n");
        for s in 0..SERVICES_PER_TEAM {
            let service = team * SERVICES_PER_TEAM + s;
            // Spread the rules evenly; the first policies take the remainder.
            let rules = RULES / policies + usize::from(service < RULES % policies);
            written += policy(&mut text, &mut rng, team, service, rules);
        }
        std::fs::write(team_file(dir, team), text)?;
    }
    Ok(written)
}

fn team_file(dir: &Path, team: usize) -> PathBuf {
    dir.join(format!("team-{team:02}.pol"))
}

fn definitions() -> String {
    let mut text = String::from(
        "# Shared definitions.\n\
         ports dns = udp/53, tcp/53\n\
         ports web = tcp/80, tcp/443\n\
         ports metrics = tcp/9100-9199\n\
         ports db = tcp/5432, tcp/3306, tcp/6379\n\
         selector monitoring = {app=prometheus}\n\
         peers internet = 0.0.0.0/0 except (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16), ::/0 except (fc00::/7)\n\
         peers partners = 203.0.113.0/24, 198.51.100.0/24 except (198.51.100.128/25)\n",
    );
    for team in 0..TEAMS {
        let _ = writeln!(text, "selector team-{team} = {{team=t{team}, env in (prod, staging)}}");
    }
    text
}

fn inventory() -> String {
    let mut text = String::from("node {\n  ipv4 10.0.0.1\n  ipv6 fd00::1\n}\n\n");
    text.push_str(
        "endpoint prometheus {\n  labels {app=prometheus, team=sre}\n  ipv4 10.0.0.2\n  iface polc-prom\n}\n\n",
    );
    for team in 0..TEAMS {
        for s in 0..SERVICES_PER_TEAM {
            let service = team * SERVICES_PER_TEAM + s;
            for r in 0..REPLICAS {
                let host = service * REPLICAS + r + 10;
                let (hi, lo) = (host / 250, host % 250 + 1);
                let env = if r == 0 { "prod" } else { "staging" };
                let _ = write!(
                    text,
                    "endpoint svc{service}-{r} {{\n  labels {{app=svc{service}, team=t{team}, tier={tier}, env={env}}}\n  \
                     ipv4 10.1.{hi}.{lo}\n  ipv6 fd00:1::{host:x}\n  iface polc-s{service}-{r}\n  \
                     port http = tcp/{http}\n  port metrics = tcp/{metrics}\n}}\n\n",
                    tier = ["web", "api", "db"][service % 3],
                    http = 8000 + service % 100,
                    metrics = 9100 + service % 50,
                );
            }
        }
    }
    text
}

/// One service's policy with `rules` rules, half ingress, half egress.
fn policy(text: &mut String, rng: &mut Rng, team: usize, service: usize, rules: usize) -> usize {
    let services = TEAMS * SERVICES_PER_TEAM;
    let _ = write!(text, "\npolicy svc{service} {{\n  select {{app=svc{service}}}\n");
    let ingress = rules / 2;
    let mut written = 0;
    for (direction, count, keyword) in [("ingress", ingress, "from"), ("egress", rules - ingress, "to")] {
        let _ = writeln!(text, "\n  {direction} {{");
        for i in 0..count {
            let peer = rng.below(services);
            let port = 1024 + i * 7 + rng.below(7);
            let d = &direction[..1]; // rule names are unique per policy, not per section
                                     // Each rule differs from the others by its port, so none repeats another.
            let line = match (direction, i % 10) {
                (_, 0) => format!("allow monitoring-{d}{i}: {keyword} $monitoring on $metrics, tcp/{port}"),
                ("ingress", 1) => format!("allow team-{d}{i}: from $team-{team} on tcp/http, tcp/{port}"),
                ("egress", 1) => format!("allow dns-{d}{i}: to host on $dns, udp/{port}"),
                ("ingress", 2) => format!("allow lb-{d}{i}: from 10.255.0.0/16 except 10.255.1.0/24 on tcp/{port}"),
                ("egress", 2) => format!("allow internet-{d}{i}: to $internet on $web, tcp/{port}"),
                (_, 3) => format!(
                    "allow range-{d}{i}: {keyword} {{app=svc{peer}, env=prod}} on tcp/{port}-{}, udp/{port}",
                    port + 5
                ),
                (_, 4) => {
                    format!("deny legacy-{d}{i}: {keyword} {{app=svc{peer}, tier not in (web, api)}} on tcp/{port}")
                }
                (_, 5) => format!("allow ping-{d}{i}: {keyword} cluster on icmp/echo-request, tcp/{port}"),
                ("egress", 6) => format!("allow partners-{d}{i}: to $partners on tcp/{port}"),
                ("egress", 7) => format!("allow db-{d}{i}: to {{tier=db, team=t{team}}} on $db, tcp/{port}"),
                _ => format!(
                    "allow svc{peer}-{d}{i}: {keyword} {{app=svc{peer}}}, {{team=t{}, !legacy}} on tcp/{port}",
                    rng.below(TEAMS)
                ),
            };
            let _ = writeln!(text, "    {line}");
            written += 1;
        }
        let _ = writeln!(text, "  }}");
    }
    text.push_str("}\n");
    written
}
