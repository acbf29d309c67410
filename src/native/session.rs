//! The process-global recording of the native API: started by `init`,
//! swept and finished by `shutdown` (or at process exit).
//!
//! Threads find the active recording through one atomic generation number;
//! only binding a thread to a recording (its first event) and starting or
//! stopping take the global lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::Duration;

use super::local::Slot;
use super::{Error, Result};
use crate::clock;
use crate::queue::OnFull;
use crate::recorder::{Config, Recorder, Stats};
use crate::sink::Address;

/// Generation of the active recording; 0 while none is active.
static ACTIVE: AtomicU64 = AtomicU64::new(0);
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
static CURRENT: Mutex<Option<Arc<Session>>> = Mutex::new(None);
static AT_EXIT: Once = Once::new();

/// One recording of this process and the threads that record into it.
pub(super) struct Session {
    pub generation: u64,
    pub recorder: Recorder,
    pid: u32,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    closed: bool,
    /// Every bound thread's slot (dead ones pruned on registration).
    list: Vec<Weak<Slot>>,
}

/// The generation of the active recording, 0 when none is.
#[inline]
pub(super) fn active_generation() -> u64 {
    ACTIVE.load(Ordering::Acquire)
}

/// The active recording if it is still generation `generation`.
pub(super) fn session(generation: u64) -> Option<Arc<Session>> {
    let current = lock(&CURRENT);
    current
        .as_ref()
        .filter(|s| s.generation == generation)
        .cloned()
}

impl Session {
    /// Adds a thread's slot so that `shutdown` can sweep it; false once the
    /// session is closing (the thread then records nothing).
    pub fn register(&self, slot: &Arc<Slot>) -> bool {
        let mut slots = lock(&self.slots);
        if slots.closed {
            return false;
        }
        slots.list.retain(|s| s.strong_count() > 0);
        slots.list.push(Arc::downgrade(slot));
        true
    }

    /// The writer's tick: hands over every thread's waiting events (an idle
    /// thread's would otherwise wait for its next event), and returns the
    /// counter value before which every event has been handed over (see
    /// `Recorder::set_tick`), or `None` if a buffer found no room. A thread
    /// reads the counter only holding its slot's lock, so once the sweep
    /// has held each lock, every event stamped before it started is in the
    /// queue; a thread that binds later stamps only after that.
    fn sweep(&self) -> Option<u64> {
        let complete = clock::ticks();
        let list: Vec<Arc<Slot>> = lock(&self.slots)
            .list
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut handed_over = true;
        for slot in list {
            handed_over &= slot.offer(&self.recorder);
        }
        handed_over.then_some(complete)
    }

    /// Closes every thread's open spans, hands their buffers over, then
    /// finishes the stream.
    fn finish(&self) -> Stats {
        let list = {
            let mut slots = lock(&self.slots);
            slots.closed = true;
            std::mem::take(&mut slots.list)
        };
        let ticks = clock::ticks();
        for slot in list.iter().filter_map(Weak::upgrade) {
            slot.close(&self.recorder, ticks);
        }
        self.recorder.finish()
    }
}

/// Locks `mutex`, ignoring poisoning (the state stays usable: every
/// critical section leaves it consistent).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to record (see `Options::start`).
#[derive(Debug, Clone)]
pub struct Options {
    session: Option<String>,
    collector: Option<String>,
    output: Option<PathBuf>,
    on_full: OnFull,
    buffer_events: usize,
    flush_interval: Duration,
    recorder: String,
}

/// Where a started recording goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The session name.
    pub session: String,
    /// The stream file; with a collector, the spill file.
    pub output: PathBuf,
    /// The collector streamed to, if any.
    pub collector: Option<Address>,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Defaults as in Python: session `$RTRACE_SESSION`, else the program's
    /// name; collector `$RTRACE_COLLECTOR` unless an output is given; stream
    /// file `$RTRACE_OUTPUT_DIR` (else `.`) `/rtrace-<session>-<pid>.rtrace`.
    pub fn new() -> Options {
        let defaults = Config::new("", "");
        Options {
            session: None,
            collector: None,
            output: None,
            on_full: defaults.on_full,
            buffer_events: defaults.buffer_events,
            flush_interval: defaults.flush_interval,
            recorder: format!("rtrace native {}; rust", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The session name shown in the timeline.
    pub fn session(mut self, session: impl Into<String>) -> Options {
        self.session = Some(session.into());
        self
    }

    /// Stream to a collector (`unix:///path.sock` or `tcp://host:port`).
    pub fn collector(mut self, address: impl Into<String>) -> Options {
        self.collector = Some(address.into());
        self
    }

    /// The stream file (with a collector: the spill file).
    pub fn output(mut self, path: impl Into<PathBuf>) -> Options {
        self.output = Some(path.into());
        self
    }

    /// What happens when the writer cannot keep up (default: drop, counted).
    pub fn on_full(mut self, on_full: OnFull) -> Options {
        self.on_full = on_full;
        self
    }

    /// Events that may wait in memory before `on_full` applies.
    pub fn buffer_events(mut self, events: usize) -> Options {
        self.buffer_events = events;
        self
    }

    /// Longest time an event waits in memory before it is written, and how
    /// often a collector is promised what it has in full (default 20 ms).
    pub fn flush_interval(mut self, interval: Duration) -> Options {
        self.flush_interval = interval;
        self
    }

    /// Describes the recording program in the stream's hello.
    pub fn recorder(mut self, label: impl Into<String>) -> Options {
        self.recorder = label.into();
        self
    }

    /// Starts the process's recording; fails if one is active.
    pub fn start(self) -> Result<Started> {
        let mut current = lock(&CURRENT);
        if let Some(active) = current.as_ref() {
            let config = active.recorder.config();
            return Err(Error::AlreadyRecording {
                session: config.session.clone(),
                target: target(config),
            });
        }
        let config = self.config()?;
        let started = Started {
            session: config.session.clone(),
            output: config.output.clone(),
            collector: config.collector.clone(),
        };
        let recorder = Recorder::start(config)?;
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session {
            generation,
            recorder,
            pid: std::process::id(),
            slots: Mutex::new(Slots::default()),
        });
        // Also with "block": a thread waiting for room holds the slot lock
        // the sweep waits for, but the sweep runs on a thread of its own,
        // and the writer goes on making that room (see `ticker`).
        let weak = Arc::downgrade(&session);
        session
            .recorder
            .set_tick(Arc::new(move || weak.upgrade()?.sweep()));
        *current = Some(session);
        ACTIVE.store(generation, Ordering::Release);
        AT_EXIT.call_once(register_at_exit);
        Ok(started)
    }

    fn config(self) -> Result<Config> {
        let session = self.session.unwrap_or_else(default_session);
        let collector = match (&self.collector, &self.output) {
            (Some(address), _) => Some(address.clone()),
            (None, None) => std::env::var("RTRACE_COLLECTOR")
                .ok()
                .filter(|a| !a.is_empty()),
            (None, Some(_)) => None,
        };
        let collector = collector.map(|a| a.parse::<Address>()).transpose()?;
        let suffix = if collector.is_some() {
            ".spill.rtrace"
        } else {
            ".rtrace"
        };
        let output = self
            .output
            .unwrap_or_else(|| default_output(&session, suffix));
        let mut config = Config::new(session, output);
        config.collector = collector;
        config.on_full = self.on_full;
        config.buffer_events = self.buffer_events;
        config.flush_interval = self.flush_interval;
        config.recorder = self.recorder;
        Ok(config)
    }
}

fn target(config: &Config) -> String {
    match &config.collector {
        Some(address) => address.to_string(),
        None => config.output.display().to_string(),
    }
}

/// Stops the active recording: closes every thread's open spans at this
/// moment, writes what they hold and the end marker. `None` when nothing
/// was recording (or in a forked child, which never writes its parent's
/// stream).
pub fn stop() -> Option<Stats> {
    let session = lock(&CURRENT).take()?;
    ACTIVE.store(0, Ordering::Release);
    if session.pid != std::process::id() {
        return None;
    }
    Some(session.finish())
}

/// Counters of the active recording so far.
pub fn stats() -> Option<Stats> {
    lock(&CURRENT).as_ref().map(|s| s.recorder.stats())
}

/// True while a recording is active.
pub fn is_recording() -> bool {
    active_generation() != 0
}

extern "C" fn stop_at_exit() {
    let _ = std::panic::catch_unwind(stop);
}

fn register_at_exit() {
    // SAFETY: `stop_at_exit` is a plain `extern "C" fn()` with no
    // preconditions that never unwinds (it catches panics); atexit only
    // stores the pointer.
    #[allow(unsafe_code)]
    let failed = unsafe { libc::atexit(stop_at_exit) } != 0;
    if failed {
        eprintln!("rtrace: could not register the at-exit handler; call rtrace::shutdown() before exiting");
    }
}

/// `$RTRACE_SESSION`, else the program's file name without extension.
pub(super) fn default_session() -> String {
    if let Some(s) = std::env::var("RTRACE_SESSION")
        .ok()
        .filter(|s| !s.is_empty())
    {
        return s;
    }
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "native".to_owned())
}

/// The session name made safe for a file name (as the Python side does).
fn safe_name(session: &str) -> String {
    let mut out = String::with_capacity(session.len());
    let mut in_run = false;
    for c in session.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    let trimmed = out.trim_matches(|c| c == '.' || c == '_');
    if trimmed.is_empty() {
        "session".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `$RTRACE_OUTPUT_DIR` (else `.`) `/rtrace-<session>-<pid><suffix>`, with
/// `-2`, `-3`… when taken — the Python recorder's naming.
fn default_output(session: &str, suffix: &str) -> PathBuf {
    let dir = std::env::var_os("RTRACE_OUTPUT_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = format!("rtrace-{}-{}", safe_name(session), std::process::id());
    let mut path = dir.join(format!("{base}{suffix}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{base}-{n}{suffix}"));
        n += 1;
    }
    path
}

/// Reports a problem once per process on stderr (`rtrace: …`): for
/// front-ends that cannot return errors (the C ABI, the tracing layer).
pub fn report_once(flag: &AtomicBool, message: impl FnOnce() -> String) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("rtrace: {} (reported once)", message());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_made_safe_as_in_python() {
        assert_eq!(safe_name("svc-a"), "svc-a");
        assert_eq!(safe_name("my svc/α"), "my_svc");
        assert_eq!(safe_name("..//"), "session");
        assert_eq!(safe_name("a  b.c"), "a_b.c");
    }

    #[test]
    fn an_explicit_output_wins_over_the_environment_collector() {
        let config = Options::new()
            .session("s")
            .output("/tmp/x.rtrace")
            .config()
            .unwrap();
        assert_eq!(config.collector, None);
        assert_eq!(config.output, PathBuf::from("/tmp/x.rtrace"));
        let err = Options::new()
            .collector("http://x")
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unix://"), "{err}");
    }
}
