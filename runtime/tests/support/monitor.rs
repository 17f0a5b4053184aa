//! `polcd monitor --format json` as a child process, for the kernel tests.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `polcd monitor --format json` child; its lines, stamped on arrival.
pub struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Monitor {
    /// Starts it and waits until it streams (its stderr says so).
    pub fn start(state: &Path, filters: &[&str]) -> Monitor {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(filters);
        let mut child = streaming(state, &args);
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if let Ok(mut lines) = sink.lock() {
                    lines.push((Instant::now(), value));
                }
            }
        });
        Monitor { child, lines }
    }

    pub fn events(&self) -> Vec<(Instant, Value)> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The first event matching `what` (waits up to 20 s for it: it comes
    /// through polcd's reader thread and this child, both slow to be
    /// scheduled on a loaded machine; found, it returns at once).
    pub fn wait_for(&self, what: &str, matches: impl Fn(&Value) -> bool) -> (Instant, Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = self.events().into_iter().find(|(_, v)| matches(v)) {
                return found;
            }
            assert!(Instant::now() < deadline, "no event for {what}; events: {:#?}", self.events());
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// `polcd monitor ARGS` with stdout piped, once it streams: its banner on
/// stderr comes after polcd has subscribed it, so no event sent from then
/// on is missed (a fixed pause before the first probe would be a guess).
pub fn streaming(state: &Path, args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_polcd"))
        .args(["--state", &state.display().to_string(), "monitor"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut stderr = BufReader::new(stderr);
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap_or_else(|e| panic!("{e}"));
    assert!(banner.contains("streaming"), "monitor did not start: {banner}");
    // The rest of stderr is read, and passed on to the test's, until the
    // monitor ends: a closed pipe would make its next line (say, "events
    // lost") end it with EPIPE, and the test would wait without knowing why.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("polcd monitor: {line}");
        }
    });
    child
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
