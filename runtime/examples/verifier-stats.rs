//! What the kernel verifier spends on each program of built endpoint
//! objects (root needed): loads each object `ROUNDS` times (or
//! `VERIFIER_STATS_ROUNDS`) with the
//! verifier's statistics on (log level 4) and prints, per program, the
//! instructions it processed and its verification time (median), and the
//! whole object's load time (median). Maps are pinned under a throwaway
//! directory in /sys/fs/bpf/polc/, removed on exit. See BENCHMARKS.md:
//!
//!   polc build examples/three-tier -o /tmp/x
//!   cargo run --release -p polc-runtime --example verifier-stats -- /tmp/x/objects/*.o

use libbpf_rs::{ObjectBuilder, PrintLevel};
use polc_runtime::loader::PinDir;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const ROUNDS: usize = 21;
/// The verifier's log level: 4, statistics only. `VERIFIER_STATS_LEVEL=6`
/// (with `VERIFIER_STATS_LOG=1`, one round) shows the states it walks.
const LOG_LEVEL: u32 = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

thread_local! {
    static LOG: RefCell<String> = const { RefCell::new(String::new()) };
}

fn capture(_level: PrintLevel, line: String) {
    LOG.with(|log| log.borrow_mut().push_str(&line));
}

/// Per program: (processed insns, verification time in us).
type ProgramStats = BTreeMap<String, (u64, u64)>;

/// The stats of each program in the verifier log.
fn parse_stats(log: &str) -> ProgramStats {
    let mut out = BTreeMap::new();
    let mut program = None;
    let mut time = 0;
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("libbpf: prog '") {
            program = rest.split('\'').next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("verification time ") {
            time = rest.split(' ').next().and_then(|t| t.parse().ok()).unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("processed ") {
            let insns = rest.split(' ').next().and_then(|t| t.parse().ok()).unwrap_or(0);
            if let Some(name) = program.take() {
                out.insert(name, (insns, time));
            }
        }
    }
    out
}

fn load_once(object: &Path, pins: &Path) -> Result<(Duration, ProgramStats), libbpf_rs::Error> {
    let mut open = ObjectBuilder::default().pin_root_path(pins)?.open_file(object)?;
    for mut prog in open.progs_mut() {
        prog.set_log_level(env_or("VERIFIER_STATS_LEVEL", LOG_LEVEL));
    }
    LOG.with(|log| log.borrow_mut().clear());
    let start = Instant::now();
    let loaded = open.load();
    let elapsed = start.elapsed();
    let log = LOG.with(|log| std::mem::take(&mut *log.borrow_mut()));
    if std::env::var_os("VERIFIER_STATS_LOG").is_some() || loaded.is_err() {
        eprintln!("{log}");
    }
    drop(loaded?);
    Ok((elapsed, parse_stats(&log)))
}

fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort();
    values[values.len() / 2]
}

fn main() -> ExitCode {
    libbpf_rs::set_print(Some((PrintLevel::Debug, capture)));
    let objects: Vec<String> = std::env::args().skip(1).collect();
    if objects.is_empty() {
        eprintln!("usage: verifier-stats OBJECT.o...");
        return ExitCode::from(2);
    }
    let pins = match PinDir::create(&format!("verifier-stats-{}", std::process::id())) {
        Ok(pins) => pins,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rounds = env_or("VERIFIER_STATS_ROUNDS", ROUNDS);
    for object in &objects {
        let mut loads = Vec::new();
        let mut per_program: BTreeMap<String, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        for _ in 0..rounds {
            match load_once(Path::new(object), pins.path()) {
                Ok((elapsed, stats)) => {
                    loads.push(elapsed);
                    for (name, (insns, time)) in stats {
                        let entry = per_program.entry(name).or_default();
                        entry.0.push(insns);
                        entry.1.push(time);
                    }
                }
                Err(e) => {
                    eprintln!("error: `{object}`: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        println!("{object}: object load median {:.2} ms (n={rounds})", median(loads).as_secs_f64() * 1e3);
        for (name, (insns, times)) in per_program {
            println!("  {name}: processed {} insns, verification median {} us", median(insns), median(times));
        }
    }
    ExitCode::SUCCESS
}
