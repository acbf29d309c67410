//! The writer thread: takes batches off the queue, encodes them with the
//! intern records and clock snapshots they need, and writes them to the
//! sink. It flushes the sink on a short timer so that a killed process
//! loses at most about one interval of events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::clock;
use crate::queue::{Batch, Queue, QueueReceiver};
use crate::sink::Sink;
use crate::terminate;
use crate::ticker::Ticker;
use crate::wire::{self, pb, Body};

/// A function's description, sent once per stream before its first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    pub id: crate::FunctionId,
    pub name: String,
    pub module: String,
    pub file: String,
    pub line: u32,
    pub native: bool,
}

/// Intern records waiting to be written (before the batches that use them).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub functions: Vec<FunctionInfo>,
    pub threads: Vec<(u64, String)>,
}

/// Called on every flush tick, on the tick thread (see
/// `Recorder::set_tick`). Returns, when it can promise it, a counter value
/// before which every event of the process has been handed to the queue.
pub type Tick = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// State shared between the recorder handle and the writer thread.
pub(crate) struct Shared {
    pub pending: Mutex<Pending>,
    pub queue: Arc<Queue>,
    pub events_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub error: Mutex<Option<String>>,
    pub tick: Mutex<Option<Tick>>,
    /// The kernel thread id of the running writer thread (0 before it has
    /// started): what `Recorder::finish` moves to its own CPU.
    pub writer_tid: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Requests to the writer thread.
#[derive(Debug)]
pub(crate) enum Control {
    /// Write everything queued so far, flush, then acknowledge.
    Flush(Sender<()>),
    /// Like `Flush`, then leave the thread (around `fork()`).
    Park(Sender<()>),
    /// Write everything queued, the end marker, flush, and leave.
    Finish,
}

/// Snapshots are written at least this often, even when idle: they are the
/// stream's heartbeat, which lets a collector's merge move past a quiet
/// process.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// How often the writer looks for a termination request while rtrace
/// handles SIGTERM (see `terminate`).
const TERMINATE_POLL: Duration = Duration::from_millis(20);

/// The writer's state; owned by its thread while running.
pub(crate) struct Writer {
    sink: Box<dyn Sink>,
    queue: QueueReceiver,
    control: Receiver<Control>,
    shared: Arc<Shared>,
    flush_interval: Duration,
    scratch: Vec<u8>,
    /// Encodes plain batches, with its scratch space kept between batches.
    plain_frames: wire::batch::PlainFrames,
    last_snapshot_ticks: u64,
    last_snapshot_at: Instant,
    last_flush: Instant,
    failed: bool,
    /// Runs the front-end's tick off this thread (see `ticker`).
    ticker: Ticker,
}

/// How a writer thread ended.
pub(crate) enum Exit {
    Parked,
    Finished,
}

impl Writer {
    /// What this writer shares with the recorder's handle.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn new(
        sink: Box<dyn Sink>,
        queue: QueueReceiver,
        control: Receiver<Control>,
        shared: Arc<Shared>,
        flush_interval: Duration,
    ) -> Writer {
        Writer {
            sink,
            queue,
            control,
            shared,
            flush_interval,
            scratch: Vec::with_capacity(1 << 16),
            plain_frames: wire::batch::PlainFrames::new(),
            last_snapshot_ticks: 0,
            last_snapshot_at: Instant::now(),
            last_flush: Instant::now(),
            failed: false,
            ticker: Ticker::new(),
        }
    }

    /// Writes a frame body now (used for the hello before the thread runs).
    pub fn write_body(&mut self, body: Body) {
        let intern = matches!(body, Body::Hello(_) | Body::Function(_) | Body::Thread(_));
        self.scratch.clear();
        wire::encode_frame(body, &mut self.scratch);
        self.write_scratch(intern);
    }

    /// Writes the frame in `scratch` (an intern record's to every output).
    fn write_scratch(&mut self, intern: bool) {
        if self.failed {
            return;
        }
        let written = if intern {
            self.sink.write_intern(&self.scratch)
        } else {
            self.sink.write_frame(&self.scratch)
        };
        match written {
            Ok(()) => {
                let n = self.scratch.len() as u64;
                self.shared.bytes_written.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => self.fail(&e),
        }
    }

    /// Writes a clock snapshot now.
    pub fn write_snapshot(&mut self) {
        self.write_complete_snapshot(0);
    }

    /// Writes a clock snapshot now, promising that every event stamped
    /// before `complete_ticks` was written before it (0: no promise).
    fn write_complete_snapshot(&mut self, complete_ticks: u64) {
        let snap = clock::snapshot();
        self.last_snapshot_ticks = snap.ticks;
        self.last_snapshot_at = Instant::now();
        self.write_body(wire::complete_clock_body(&snap, complete_ticks));
    }

    /// The thread's main loop. Returns the writer for parking or ending.
    pub fn run(mut self) -> (Writer, Exit) {
        // Right after connecting: the clock exchange's burst, before any
        // batch (see `clocksync`).
        self.sink.sync_clock();
        loop {
            let mut wait = self
                .flush_interval
                .saturating_sub(self.last_flush.elapsed());
            if terminate::armed() {
                wait = wait.min(TERMINATE_POLL);
            }
            select! {
                recv(self.queue.batches) -> batch => match batch {
                    Ok(batch) => self.write_batch(batch),
                    Err(_) => return self.finish(),
                },
                recv(self.control) -> request => match request {
                    Ok(Control::Flush(ack)) => {
                        self.drain();
                        self.flush();
                        let _ = ack.send(());
                    }
                    Ok(Control::Park(ack)) => {
                        // Before the acknowledgement: fork() must find no
                        // tick thread either.
                        self.ticker.stop();
                        self.drain();
                        self.flush();
                        let _ = ack.send(());
                        return (self, Exit::Parked);
                    }
                    Ok(Control::Finish) | Err(_) => return self.finish(),
                },
                recv(self.ticker.answers()) -> got => {
                    if let Some(complete) = self.ticker.answered(got) {
                        self.promise(complete);
                    }
                }
                default(wait) => {}
            }
            if terminate::requested() {
                self.terminate();
            }
            if self.last_flush.elapsed() >= self.flush_interval {
                self.tick();
            }
        }
    }

    /// SIGTERM arrived: write everything recorded, end the stream, and let
    /// the process die of the signal (see `terminate`).
    fn terminate(&mut self) {
        terminate::start_watchdog();
        self.last_tick(terminate::GRACE / 2);
        self.write_end();
        loop {
            terminate::die_of_sigterm();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The tick before the end at SIGTERM, which hands idle threads'
    /// events over: waits for its answer for `wait` at most, writing what
    /// comes meanwhile (the tick waits for the GIL, which a busy thread
    /// may keep for a whole switch interval while it fills the queue).
    fn last_tick(&mut self, wait: Duration) {
        if !self.ticker.asked() && !self.ask_for_tick() {
            return;
        }
        let deadline = Instant::now() + wait;
        while self.ticker.asked() {
            select! {
                recv(self.queue.batches) -> batch => match batch {
                    Ok(batch) => self.write_batch(batch),
                    Err(_) => return,
                },
                recv(self.ticker.answers()) -> _ => return,
                default(deadline.saturating_duration_since(Instant::now())) => return,
            }
        }
    }

    fn finish(mut self) -> (Writer, Exit) {
        self.ticker.stop();
        self.write_end();
        (self, Exit::Finished)
    }

    /// Writes everything queued (after a last clock exchange), a last
    /// snapshot and the end marker, flushes, and closes the sink.
    fn write_end(&mut self) {
        self.drain();
        self.sink.sync_clock_at_end();
        self.write_snapshot();
        let end = pb::End {
            events: self.shared.events_written.load(Ordering::Relaxed),
            lost: self.shared.queue.lost(),
            stop_unix_ns: clock::unix_ns(),
        };
        self.write_body(Body::End(end));
        self.flush();
        self.sink.close();
    }

    /// Every flush interval: the clock exchange, a tick asked of the front
    /// end (its answer comes back to `promise`), a heartbeat snapshot when
    /// one is due and not coming with that answer, and a flush. While an
    /// earlier tick still waits (for the GIL, held by a long call into C),
    /// heartbeats go on.
    fn tick(&mut self) {
        self.sink.sync_clock();
        let asked = !self.ticker.asked() && self.ask_for_tick();
        if !asked && self.last_snapshot_at.elapsed() >= SNAPSHOT_EVERY {
            self.write_snapshot();
        }
        self.flush();
    }

    /// Hands the front-end's tick, if it set one, to the tick thread; runs
    /// it here if that thread cannot start. True if one was asked for.
    fn ask_for_tick(&mut self) -> bool {
        let Some(tick) = self.shared.tick.lock().ok().and_then(|t| t.clone()) else {
            return false;
        };
        if let Err(tick) = self.ticker.ask(tick) {
            let complete = tick();
            self.promise(complete);
        }
        true
    }

    /// A tick's answer: what it promises, if anything (see `Tick`).
    fn promise(&mut self, complete: Option<u64>) {
        if let Some(complete_ticks) = complete {
            // What the tick handed over is queued by now: write it, then
            // the promise, so that a collector can write those events out
            // at once instead of a reorder window later.
            self.drain_queued();
            self.write_complete_snapshot(complete_ticks.max(1));
        } else if self.last_snapshot_at.elapsed() >= SNAPSHOT_EVERY {
            self.write_snapshot();
        }
        self.flush();
    }

    fn drain(&mut self) {
        while let Ok(batch) = self.queue.batches.try_recv() {
            self.write_batch(batch);
        }
        self.write_pending();
    }

    /// Writes the batches queued now, not those queued while it writes: a
    /// process tracing flat out must not keep the tick here.
    fn drain_queued(&mut self) {
        for _ in 0..self.queue.batches.len() {
            match self.queue.batches.try_recv() {
                Ok(batch) => self.write_batch(batch),
                Err(_) => break,
            }
        }
        self.write_pending();
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if !self.failed {
            if let Err(e) = self.sink.flush() {
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, error: &std::io::Error) {
        self.failed = true;
        let message = format!("writing to {} failed: {error}", self.sink.describe());
        if let Ok(mut slot) = self.shared.error.lock() {
            slot.get_or_insert(message);
        }
    }

    fn write_pending(&mut self) {
        let pending = match self.shared.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        for f in pending.functions {
            self.write_body(Body::Function(pb::Function {
                id: f.id.0,
                name: f.name,
                module: f.module,
                file: f.file,
                line: f.line,
                native: f.native,
            }));
        }
        for (tid, name) in pending.threads {
            self.write_body(Body::Thread(pb::Thread { tid, name }));
        }
    }

    fn write_batch(&mut self, mut batch: Batch) {
        // After a reconnect, the burst goes before the next batch.
        self.sink.sync_clock();
        self.write_pending();
        let n = (batch.events.len() - batch.payload_slots) as u64;
        if self.failed {
            self.shared.queue.add_lost(n);
        } else if n > 0 || batch.lost_before > 0 {
            let newest = batch.events.last().map_or(0, |e| e.ticks);
            if newest > self.last_snapshot_ticks {
                self.write_snapshot();
            }
            self.scratch.clear();
            let (tid, lost) = (batch.tid, batch.lost_before);
            if batch.texts.is_empty()
                && self
                    .plain_frames
                    .encode(tid, &batch.events, lost, &mut self.scratch)
            {
                self.write_scratch(false);
            } else {
                let texts = std::mem::take(&mut batch.texts);
                self.write_body(wire::batch_body(tid, &batch.events, lost, texts));
            }
            if self.failed {
                self.shared.queue.add_lost(n);
            } else {
                self.shared.events_written.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.queue.done(batch);
    }
}
