//! `polcd run`: the socket server and the file watcher feeding the agent's
//! event loop.

use super::api::{socket_path, Request, Response};
use super::bundled::BundleAgent;
use super::catalog::Catalog;
use super::daemon::{log, Agent, AgentError, Config, Event};
use super::metrics::MetricsError;
use super::monitor::{self, Hub};
use notify::{EventKind, RecursiveMode, Watcher};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("polcd is already running on `{0}`")]
    AlreadyRunning(PathBuf),
    #[error("cannot listen on `{path}`: {source}")]
    Listen { path: PathBuf, source: std::io::Error },
    #[error("cannot watch `{path}`: {source}")]
    Watch { path: PathBuf, source: notify::Error },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// How often devices are checked: endpoints waiting for theirs, links whose device went away.
const RETRY: Duration = Duration::from_secs(1);

/// What the event loop drives: the agent of a policy directory
/// ([`Agent`]) or of a built bundle ([`BundleAgent`]).
pub trait Daemon {
    fn handle(&mut self, request: Request) -> Response;
    /// The watched directory changed (debounced).
    fn reload(&mut self);
    /// Every second: devices that appeared or went away.
    fn tick(&mut self);
    /// Names for what the kernel reports, as of now.
    fn catalog(&self) -> Catalog;
    /// Follows the counters to the generations running now.
    fn follow_counters(&mut self, catalog: &Catalog);
    /// After every event: names for the monitor, counters following the
    /// generations.
    fn observe(&mut self, hub: &Hub) {
        let catalog = self.catalog();
        self.follow_counters(&catalog);
        hub.set_catalog(catalog);
    }
}

impl Daemon for Agent {
    fn handle(&mut self, request: Request) -> Response {
        Agent::handle(self, request)
    }
    fn reload(&mut self) {
        Agent::reload(self)
    }
    fn tick(&mut self) {
        Agent::tick(self)
    }
    fn catalog(&self) -> Catalog {
        Agent::catalog(self)
    }
    fn follow_counters(&mut self, catalog: &Catalog) {
        Agent::follow_counters(self, catalog)
    }
}

impl Daemon for BundleAgent {
    fn handle(&mut self, request: Request) -> Response {
        BundleAgent::handle(self, request)
    }
    fn reload(&mut self) {
        BundleAgent::reload(self)
    }
    fn tick(&mut self) {
        BundleAgent::tick(self)
    }
    fn catalog(&self) -> Catalog {
        BundleAgent::catalog(self)
    }
    fn follow_counters(&mut self, catalog: &Catalog) {
        BundleAgent::follow_counters(self, catalog)
    }
}

/// Runs the agent until the process is killed. Enforcement outlives it.
pub fn run(config: Config) -> Result<(), RunError> {
    run_with(config, Agent::start)
}

/// `polcd run --bundle`: runs the agent of the bundle in `config.policies`.
pub fn run_bundle(config: Config) -> Result<(), RunError> {
    run_with(config, BundleAgent::start)
}

fn run_with<D: Daemon>(config: Config, start: impl FnOnce(Config) -> Result<D, AgentError>) -> Result<(), RunError> {
    let socket = socket_path(&config.state);
    if UnixStream::connect(&socket).is_ok() {
        return Err(RunError::AlreadyRunning(socket));
    }
    // Watching starts before the agent's first read of the directory: a
    // change made while it starts (after that read) is then reloaded, not
    // missed until the next one. The agent's own error (a missing
    // directory, say) is still the one reported.
    let (events, inbox) = mpsc::channel::<Event>();
    let watcher = watch(&config.policies, events.clone());
    let mut agent = start(config.clone())?;
    let _watcher = watcher?;
    let listener = listen(&socket)?;
    let hub = Hub::new();
    agent.observe(&hub);
    hub.start_reader(config.pin_root.join("node").join(crate::datapath::EVENTS_MAP));
    if let Some(addr) = config.observe.metrics {
        let to_loop = events.clone();
        let bound = super::metrics::serve(addr, move || ask_stats(&to_loop), hub.clone())?;
        log(&format!("serving metrics on http://{bound}/metrics"));
    }
    let to_loop = events.clone();
    let for_clients = hub.clone();
    std::thread::spawn(move || serve(listener, to_loop, for_clients));
    log(&format!("listening on `{}`, watching `{}`", socket.display(), config.policies.display()));

    let mut reload_due: Option<Instant> = None;
    let mut last_tick = Instant::now();
    loop {
        let wait = reload_due.map_or(RETRY, |due| due.saturating_duration_since(Instant::now()));
        match inbox.recv_timeout(wait) {
            Ok(Event::FilesChanged) => reload_due = Some(Instant::now() + config.debounce),
            Ok(Event::Request(request, reply)) => {
                let _ = reply.send(agent.handle(request));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if reload_due.is_some_and(|due| Instant::now() >= due) {
            reload_due = None;
            agent.reload();
        } else if reload_due.is_none() && last_tick.elapsed() >= RETRY {
            last_tick = Instant::now();
            agent.tick();
        }
        agent.observe(&hub);
    }
}

/// The agent's counters, asked through its loop (a scrape waits at most
/// 10 s, e.g. behind a reload).
fn ask_stats(events: &mpsc::Sender<Event>) -> Option<super::stats::Stats> {
    let (reply, response) = mpsc::channel();
    events.send(Event::Request(Request::Stats, reply)).ok()?;
    response.recv_timeout(Duration::from_secs(10)).ok()?.stats
}

/// The socket, readable and writable by root only.
fn listen(path: &Path) -> Result<UnixListener, RunError> {
    let error = |source| RunError::Listen { path: path.to_path_buf(), source };
    let _ = std::fs::remove_file(path);
    // SAFETY: umask only changes this process's file creation mask; it is
    // set so the socket is never reachable by others, even briefly.
    let old = unsafe { libc::umask(0o077) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener.map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    Ok(listener)
}

fn serve(listener: UnixListener, events: mpsc::Sender<Event>, hub: Arc<Hub>) {
    for stream in listener.incoming().filter_map(|s| s.ok()) {
        let events = events.clone();
        let hub = hub.clone();
        std::thread::spawn(move || answer(stream, events, &hub));
    }
}

/// Answers each line of one connection (a `monitor` request turns it into
/// an event stream).
fn answer(stream: UnixStream, events: mpsc::Sender<Event>, hub: &Hub) {
    let Ok(mut writer) = stream.try_clone() else { return };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Monitor(filter)) => return monitor::stream(writer, hub, filter),
            Ok(request) => {
                let (reply, response) = mpsc::channel();
                if events.send(Event::Request(request, reply)).is_err() {
                    return;
                }
                response.recv().unwrap_or_else(|_| Response::error("polcd is stopping"))
            }
            Err(e) => Response::error(format!("bad request: {e}")),
        };
        let mut text = serde_json::to_string(&response).unwrap_or_default();
        text.push('\n');
        if writer.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends [`Event::FilesChanged`] for every change of a file in `dir`
/// (reads are ignored; debouncing is the loop's).
fn watch(dir: &Path, events: mpsc::Sender<Event>) -> Result<notify::RecommendedWatcher, RunError> {
    let error = |source| RunError::Watch { path: dir.to_path_buf(), source };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !matches!(event.kind, EventKind::Access(_)) {
                let _ = events.send(Event::FilesChanged);
            }
        }
    })
    .map_err(error)?;
    watcher.watch(dir, RecursiveMode::Recursive).map_err(error)?;
    Ok(watcher)
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A daemon that counts its reloads.
    struct Counting(Arc<AtomicUsize>);

    impl Daemon for Counting {
        fn handle(&mut self, _: Request) -> Response {
            Response::error("not in this test")
        }
        fn reload(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn tick(&mut self) {}
        fn catalog(&self) -> Catalog {
            Catalog::default()
        }
        fn follow_counters(&mut self, _: &Catalog) {}
    }

    #[test]
    fn a_change_made_while_the_agent_starts_is_reloaded() {
        let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (policies, state) = (work.path().join("policies"), work.path().join("state"));
        for dir in [&policies, &state] {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        let config = Config {
            policies: policies.clone(),
            state,
            netns: None,
            pin_root: work.path().join("pins"),
            debounce: Duration::ZERO,
            observe: Default::default(),
            attach: Default::default(),
        };
        let reloads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reloads);
        // The agent has read the directory; a file is written before it is up.
        std::thread::spawn(move || {
            run_with(config, move |_| {
                std::fs::write(policies.join("late.pol"), "policy late {\n}\n").unwrap_or_else(|e| panic!("{e}"));
                Ok(Counting(counted))
            })
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while reloads.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the change made while the agent started was never reloaded");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
