//! A recording: the queue, the writer thread and the stream's identity.
//! Language front-ends (the Python hook, the native API) own thread buffers
//! and hand them over here; this module never calls back into them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::buffer::ThreadBuffer;
use crate::clock;
use crate::clocksync::{LocalClock, SyncConfig};
use crate::event::{FunctionId, Kind, MAX_FUNCTION_ID};
use crate::mark::{token, FlowIds, Payload};
use crate::queue::{OnFull, Queue};
use crate::sink::{Address, CollectorSink, FileSink, Sink, Token};
use crate::terminate;
use crate::wire::{self, pb, Body};
use crate::writer::{Control, Exit, FunctionInfo, Pending, Shared, Writer};
use crate::{Error, Result};

/// How to record.
#[derive(Debug, Clone)]
pub struct Config {
    /// Session name shown in the timeline.
    pub session: String,
    /// Stream file to write; with a collector, the spill file used while
    /// the collector is unreachable.
    pub output: PathBuf,
    /// Stream to this collector instead of writing `output`.
    pub collector: Option<Address>,
    /// Shared token sent to the collector on every connection (it is
    /// required on TCP); default `$RTRACE_TOKEN`. Never written to a file.
    pub token: Option<Token>,
    /// Overflow policy.
    pub on_full: OnFull,
    /// Events the queue may hold before the policy applies. With the
    /// per-thread buffers this bounds the recorder's memory at about
    /// `(buffer_events + threads * chunk) * 16` bytes.
    pub buffer_events: usize,
    /// Longest time an event waits in memory before it is written.
    pub flush_interval: Duration,
    /// How long `OnFull::Block` waits for room before dropping.
    pub block_timeout: Duration,
    /// Program arguments, for the hello.
    pub argv: Vec<String>,
    /// Describes the recorder (runtime, hook), for the hello.
    pub recorder: String,
    /// End the stream before the process dies of SIGTERM, if SIGTERM has
    /// its default action (see `terminate`). Off by default.
    pub flush_on_sigterm: bool,
    /// The parent process shown in the timeline; `None`: the OS parent.
    /// (A fork server's workers name the program that asked for them.)
    pub parent_pid: Option<u32>,
    /// The clock exchange with the collector (see `clocksync`); the
    /// default's interval comes from `$RTRACE_CLOCK_SYNC`.
    pub clock_sync: SyncConfig,
}

impl Config {
    /// Defaults: drop on overflow, 1 Mi queued events, 20 ms flushes (a
    /// collector holds a stream's events until the tick's promise: see
    /// `Recorder::set_tick`; at 100 ms one process at 18 M events/s had it
    /// hold ~50 MB, and finish the merged file a few ms later).
    pub fn new(session: impl Into<String>, output: impl Into<PathBuf>) -> Config {
        Config {
            session: session.into(),
            output: output.into(),
            collector: None,
            token: Token::from_env(),
            on_full: OnFull::Drop,
            buffer_events: 1 << 20,
            flush_interval: Duration::from_millis(20),
            block_timeout: Duration::from_secs(10),
            argv: std::env::args().collect(),
            recorder: format!("rtrace {}", env!("CARGO_PKG_VERSION")),
            parent_pid: None,
            flush_on_sigterm: false,
            clock_sync: SyncConfig::from_env().unwrap_or_else(|e| {
                eprintln!("rtrace: {e}; using the default");
                SyncConfig::default()
            }),
        }
    }

    /// Events per thread buffer: an eighth of the queue, within limits.
    pub fn chunk_events(&self) -> usize {
        (self.buffer_events / 8).clamp(2 * crate::mark::MAX_PAYLOAD_SLOTS, 16 * 1024)
    }

    fn validate(&self) -> Result<()> {
        if self.buffer_events < 128 {
            return Err(Error::Config(format!(
                "buffer_events must be at least 128, not {}",
                self.buffer_events
            )));
        }
        let ms = self.flush_interval.as_millis();
        if !(1..=60_000).contains(&ms) {
            return Err(Error::Config(format!(
                "flush_interval must be between 1 ms and 60 s, not {ms} ms"
            )));
        }
        Ok(())
    }
}

/// Counters of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Events written to the stream.
    pub events: u64,
    /// Events lost (queue full, or the sink failed).
    pub lost: u64,
    /// Bytes written to the stream.
    pub bytes: u64,
    /// The first write error, if any.
    pub error: Option<String>,
}

enum WriterSlot {
    /// The thread returns its kernel thread id too (see `wait_until_gone`).
    Running(JoinHandle<(Writer, Exit, u64)>, Sender<Control>),
    Parked(Box<Writer>, Sender<Control>),
    Gone,
}

/// An active recording.
pub struct Recorder {
    config: Config,
    queue: Arc<Queue>,
    shared: Arc<Shared>,
    writer: Mutex<WriterSlot>,
    next_function: AtomicU32,
    /// The process that started the recording.
    pid: u32,
    /// True while the writer thread is parked (see `park`).
    parked: AtomicBool,
    max_age_ticks: u64,
    /// Ids of the names of user events (spans, instants, counters, flows).
    mark_names: Mutex<HashMap<String, FunctionId>>,
    flow_ids: FlowIds,
    /// True when this recorder armed the SIGTERM handler.
    sigterm: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("session", &self.config.session)
            .field("output", &self.config.output)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Creates the stream file, writes the hello and starts the writer.
    pub fn start(config: Config) -> Result<Recorder> {
        config.validate()?;
        let sink: Box<dyn Sink> = match &config.collector {
            Some(address) => Box::new(
                CollectorSink::with_clock(
                    address.clone(),
                    config.output.clone(),
                    config.clock_sync,
                    Box::new(LocalClock),
                )
                .with_token(config.token.clone()),
            ),
            None => Box::new(FileSink::create(&config.output)?),
        };
        let description = clock::describe();
        let chunk = config.chunk_events();
        let capacity = (config.buffer_events / chunk).max(2);
        let (queue, receiver) = Queue::new(capacity, chunk, config.on_full, config.block_timeout);
        let queue = Arc::new(queue);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            queue: queue.clone(),
            events_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            error: Mutex::new(None),
            tick: Mutex::new(None),
            writer_tid: AtomicU64::new(0),
        });
        let (control_tx, control_rx) = crossbeam_channel::bounded(4);
        let mut writer = Writer::new(
            sink,
            receiver,
            control_rx,
            shared.clone(),
            config.flush_interval,
        );
        writer.write_body(Body::Hello(hello(&config, &description)));
        writer.write_snapshot();
        let handle = spawn_writer(writer)?;
        let sigterm = config.flush_on_sigterm && terminate::arm();
        Ok(Recorder {
            sigterm,
            max_age_ticks: clock::duration_to_ticks(config.flush_interval, &description),
            config,
            queue,
            shared,
            writer: Mutex::new(WriterSlot::Running(handle, control_tx)),
            next_function: AtomicU32::new(0),
            pid: std::process::id(),
            parked: AtomicBool::new(false),
            mark_names: Mutex::new(HashMap::new()),
            flow_ids: FlowIds::new(),
        })
    }

    /// The recording's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new, empty buffer for thread `tid`.
    pub fn new_thread_buffer(&self, tid: u64) -> ThreadBuffer {
        ThreadBuffer::new(tid, self.queue.take_array(), self.max_age_ticks)
    }

    /// Hands a thread's events to the writer (see `Queue::hand_over`),
    /// restarting a parked writer first.
    pub fn hand_over(&self, buf: &mut ThreadBuffer) {
        if self.parked.load(Ordering::Acquire) {
            let _ = self.unpark();
        }
        self.queue.hand_over(buf);
    }

    /// Hands a thread's events to the writer only if the queue has room
    /// now, never applying the overflow policy: for handing over from
    /// outside the thread (see `set_tick`). Returns false if it did not.
    pub fn offer(&self, buf: &mut ThreadBuffer) -> bool {
        if self.parked.load(Ordering::Acquire) {
            return false;
        }
        self.queue.offer(buf)
    }

    /// Sets the function called on every flush tick, e.g. to `offer` the
    /// events of threads that are blocked, so that they are written within
    /// about one flush interval even if the process is killed. It runs on
    /// a thread of its own (see `ticker`), so it may wait (for the GIL,
    /// for a thread's lock) while the writer goes on writing; one tick at
    /// a time, the next asked for only after it returned.
    ///
    /// When it returns a counter value, the writer writes what is queued,
    /// then a clock snapshot that promises that no event stamped before
    /// that value comes later in the stream: a collector can then write
    /// the process's events out without waiting for its reorder window.
    /// Return `None` whenever that cannot be promised.
    pub fn set_tick(&self, tick: crate::writer::Tick) {
        if let Ok(mut slot) = self.shared.tick.lock() {
            *slot = Some(tick);
        }
    }

    /// Allocates a function id, or `None` when all ids are used.
    pub fn next_function_id(&self) -> Option<FunctionId> {
        let id = self.next_function.fetch_add(1, Ordering::Relaxed);
        (id <= MAX_FUNCTION_ID).then_some(FunctionId(id))
    }

    /// Queues a function's intern record; it is written before any batch
    /// handed over after this call.
    pub fn intern_function(&self, info: FunctionInfo) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.functions.push(info);
        }
    }

    /// The id of a user event's name (a span's, instant's, counter's or
    /// flow end's), interned on first use. `None` when all ids are used.
    pub fn intern_name(&self, name: &str) -> Option<FunctionId> {
        let mut names = self.mark_names.lock().ok()?;
        if let Some(&id) = names.get(name) {
            return Some(id);
        }
        let id = self.next_function_id()?;
        self.intern_function(FunctionInfo {
            id,
            name: name.to_owned(),
            module: String::new(),
            file: String::new(),
            line: 0,
            native: false,
        });
        names.insert(name.to_owned(), id);
        Some(id)
    }

    /// Appends a user event to a thread's buffer, handing the buffer over
    /// first if the event does not fit, and after it if it is full.
    pub fn push_mark(
        &self,
        buf: &mut ThreadBuffer,
        ticks: u64,
        name: FunctionId,
        kind: Kind,
        payload: Option<&Payload>,
    ) {
        let full = match buf.push_mark(ticks, name, kind, payload) {
            Some(full) => full,
            None => {
                self.hand_over(buf);
                buf.push_mark(ticks, name, kind, payload).unwrap_or(true)
            }
        };
        if full {
            self.hand_over(buf);
        }
    }

    /// A fresh flow id and its token (a W3C traceparent).
    pub fn new_flow(&self) -> (u64, String) {
        let id = self.flow_ids.next();
        (id, token::format(self.flow_ids.trace_id(), id))
    }

    /// Queues a thread's name.
    pub fn name_thread(&self, tid: u64, name: String) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.threads.push((tid, name));
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            events: self.shared.events_written.load(Ordering::Relaxed),
            lost: self.queue.lost(),
            bytes: self.shared.bytes_written.load(Ordering::Relaxed),
            error: self.shared.error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Waits until everything handed over so far is written and flushed.
    /// Returns false if the writer did not answer within `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        if self.unpark().is_err() {
            return false;
        }
        let Some(control) = self.control() else {
            return false;
        };
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        control.send(Control::Flush(ack_tx)).is_ok() && ack_rx.recv_timeout(timeout).is_ok()
    }

    fn control(&self) -> Option<Sender<Control>> {
        match &*self.writer.lock().ok()? {
            WriterSlot::Running(_, c) | WriterSlot::Parked(_, c) => Some(c.clone()),
            WriterSlot::Gone => None,
        }
    }

    /// Stops the writer thread after it has written and flushed everything
    /// handed over so far, so that `fork()` finds no extra thread. Returns
    /// false if the writer did not stop within `timeout`. The writer
    /// restarts by itself at the next hand-over or flush (not at once after
    /// the fork: 3.13 counts threads after running the fork handlers).
    pub fn park(&self, timeout: Duration) -> bool {
        let Ok(mut slot) = self.writer.lock() else {
            return false;
        };
        let WriterSlot::Running(_, control) = &*slot else {
            return matches!(*slot, WriterSlot::Parked(..));
        };
        let deadline = Instant::now() + timeout;
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if control.send(Control::Park(ack_tx)).is_err() || ack_rx.recv_deadline(deadline).is_err() {
            return false;
        }
        let WriterSlot::Running(handle, control) = std::mem::replace(&mut *slot, WriterSlot::Gone)
        else {
            return false;
        };
        match handle.join() {
            Ok((writer, Exit::Parked, tid)) => {
                // Parking is for fork(): the process must count one thread
                // less by then (CPython 3.12+ warns at a multi-threaded fork).
                wait_until_gone(tid, deadline);
                *slot = WriterSlot::Parked(Box::new(writer), control);
                self.parked.store(true, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Restarts a parked writer thread (no-op when it runs).
    pub fn unpark(&self) -> Result<()> {
        if std::process::id() != self.pid {
            // A forked child must never write to its parent's stream.
            return Ok(());
        }
        let Ok(mut slot) = self.writer.lock() else {
            return Ok(());
        };
        if let WriterSlot::Parked(..) = &*slot {
            let WriterSlot::Parked(writer, control) =
                std::mem::replace(&mut *slot, WriterSlot::Gone)
            else {
                return Ok(());
            };
            *slot = WriterSlot::Running(spawn_writer(*writer)?, control);
        }
        self.parked.store(false, Ordering::Release);
        Ok(())
    }

    /// Writes everything handed over, the end marker, and closes the stream.
    /// Later hand-overs are counted as lost. Idempotent.
    pub fn finish(&self) -> Stats {
        if let Ok(mut tick) = self.shared.tick.lock() {
            *tick = None;
        }
        let slot = match self.writer.lock() {
            Ok(mut s) => std::mem::replace(&mut *s, WriterSlot::Gone),
            Err(_) => WriterSlot::Gone,
        };
        match slot {
            WriterSlot::Running(handle, control) => {
                let _ = control.send(Control::Finish);
                // This thread now only waits for the writer: let it have
                // this CPU rather than wait for a busy one (see `sched`).
                let tid = self.shared.writer_tid.load(Ordering::Acquire);
                if tid != 0 {
                    crate::sched::move_to_current_cpu(tid);
                }
                let _ = handle.join();
            }
            WriterSlot::Parked(writer, control) => {
                drop(control);
                let _ = writer.run();
            }
            WriterSlot::Gone => {}
        }
        if self.sigterm && std::process::id() == self.pid {
            terminate::disarm();
        }
        self.stats()
    }
}

fn spawn_writer(writer: Writer) -> Result<JoinHandle<(Writer, Exit, u64)>> {
    let shared = writer.shared();
    std::thread::Builder::new()
        .name("rtrace-writer".into())
        .spawn(move || {
            // Without it the writer's wake-ups preempt the traced thread
            // (see `sched`). A failure leaves the default policy: harmless.
            let _ = crate::sched::batch_current_thread();
            let tid = crate::sched::current_tid();
            shared.writer_tid.store(tid, Ordering::Release);
            let (writer, exit) = writer.run();
            // A parked (or finished) writer's id names no thread of ours.
            shared.writer_tid.store(0, Ordering::Release);
            (writer, exit, tid)
        })
        .map_err(|source| Error::Io {
            action: "starting the writer thread",
            error: source,
        })
}

/// Waits, until `deadline` at most, until the kernel has let go of this
/// process's thread `tid`. A joined thread is still counted among the
/// process's threads (`/proc/self/task`, `/proc/self/stat`) for a moment
/// after `join` returns, while it finishes exiting.
pub(crate) fn wait_until_gone(tid: u64, deadline: Instant) {
    let task = PathBuf::from(format!("/proc/self/task/{tid}"));
    while task.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(20));
    }
}

fn hello(config: &Config, description: &clock::Description) -> pb::Hello {
    pb::Hello {
        protocol_version: u32::from(wire::FORMAT_VERSION),
        session: config.session.clone(),
        pid: std::process::id(),
        ppid: config.parent_pid.unwrap_or_else(parent_pid),
        host: crate::host::name(),
        boot_id: crate::host::boot_id(),
        argv: hello_argv(&config.argv),
        start_unix_ns: clock::unix_ns(),
        clock: Some(wire::clock_info(description)),
        recorder: config.recorder.clone(),
        pid_namespace: crate::host::pid_namespace(),
        process_start_ticks: crate::host::process_start_ticks(),
        timens_monotonic_offset_ns: crate::host::timens_monotonic_offset_ns(),
        clock_sync: config.collector.is_some() && config.clock_sync.interval.is_some(),
        relayed_by: Vec::new(),
    }
}

/// Most bytes of argv put in the hello: collectors take hellos of up to
/// 1 MiB before they accept a stream; the rest is for display only.
const MAX_HELLO_ARGV_BYTES: usize = 256 << 10;

/// `argv` cut to `MAX_HELLO_ARGV_BYTES` (a last "…" marks a cut).
fn hello_argv(argv: &[String]) -> Vec<String> {
    let mut total = 0;
    let mut out = Vec::new();
    for arg in argv {
        total += arg.len();
        if total > MAX_HELLO_ARGV_BYTES {
            out.push("…".to_owned());
            break;
        }
        out.push(arg.clone());
    }
    out
}

fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}
