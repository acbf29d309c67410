//! The live collector: accepts streams, merges them as they arrive, writes
//! the timeline incrementally, and on shutdown drains and finishes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use rtrace::merge::{MergeConfig, Merger, StreamStats};
use rtrace::timeline::{StreamId, TimelineSink};
use rtrace::Address;

use crate::access::Access;
use crate::heap::IdleTrim;
use crate::ingest::{Arrival, ConnId, Ingest};
use crate::priority;
use crate::status::StatusLine;
use crate::stop::Stop;

/// How to collect.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub listen: Vec<Address>,
    /// Tokens, limits and timeouts for connections.
    pub access: Access,
    pub merge: MergeConfig,
    /// After a shutdown request, how long open streams may keep sending
    /// before their connections are closed.
    pub drain: Duration,
    /// Print a status line (streams, events/s, lost) once a second.
    pub status: bool,
    /// The nice value the threads that carry events take while they fall
    /// behind (see `priority`); 0 leaves them alone.
    pub nice: i32,
}

/// What a collection saw.
#[derive(Debug)]
pub struct Collected {
    pub stats: Vec<StreamStats>,
    pub bytes: Vec<u64>,
    /// Connections refused (token, limits, protocol version).
    pub refused: u64,
    /// Connections closed before a hello: not rtrace, broken, timed out.
    pub broken: u64,
}

/// Arrivals (each about one batch of one stream) waiting for the merge at
/// most. When the merge falls this far behind, reader threads stop reading
/// their sockets until it catches up: the backlog stays in the recorders,
/// whose policy drops (and counts) or blocks, not in the collector's memory.
const QUEUED_ARRIVALS: usize = 64;
/// How often the loop looks at the clock (the live horizon, the status
/// line) while nothing arrives. A stop request wakes it at once.
const TICK: Duration = Duration::from_millis(10);
/// How often what the merge has written goes on to the file, however
/// little it is. Busy streams fill the writer's buffer, and so the file,
/// much faster; this bounds how far the file on disk can lag behind the
/// merge while streams are quiet (a service between requests), and costs
/// one small write a second. (Perfetto's `traced` has the same knob for
/// long traces: `file_write_period_ms`.)
const WRITE_OUT_EVERY: Duration = Duration::from_secs(1);

/// Collects into the sink `create` makes until `stop` is set, then drains
/// and finishes. `create` runs only once every address is listening: a
/// collector that cannot start (an address taken, refused access rules)
/// never creates, nor truncates, its output, which may be another running
/// collector's timeline. `on_ready` runs next, with the addresses listened
/// on (a TCP port 0 as the port the system chose).
pub fn collect<S: TimelineSink>(
    options: &LiveOptions,
    create: impl FnOnce() -> Result<S>,
    stop: &Stop,
    on_ready: impl FnOnce(&[Address]),
) -> Result<Collected> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUED_ARRIVALS);
    let mut ingest = Ingest::start(&options.listen, options.access.clone(), tx)?;
    // Streams that connect meanwhile wait for their welcome, which the
    // merge sends once it has registered them.
    let sink = create()?;
    on_ready(ingest.addresses());
    // This thread is the merge thread. It and the other threads that carry
    // events take `nice` only while they fall behind (see `priority`).
    if options.nice != 0 {
        if let Err(e) = priority::allow_raising(options.nice) {
            eprintln!("{}", priority::not_raised_note(options.nice, &e));
        }
    }
    let _follower = priority::Follower::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut state = State::new(Merger::new(sink, options.merge));
    let mut status = Status::new(options.status);
    let mut idle_trim = IdleTrim::default();
    let mut written_out = Instant::now();
    while !stop.requested() {
        crossbeam_channel::select! {
            recv(rx) -> arrival => match arrival {
                Ok(arrival) => state.apply(arrival)?,
                Err(_) => break,
            },
            recv(stop.woken()) -> _ => {}
            default(TICK) => {}
        }
        state.merger.advance(rtrace::clock::monotonic_ns())?;
        let open = ingest.open_connections();
        if open == 0 {
            priority::PRESSURE.calm();
        } else if open > cpus {
            // More streams than CPUs: their programs alone may saturate the
            // machine, and the raise must not wait for a backlog.
            priority::PRESSURE.note();
        }
        status.tick(&state, open);
        let now = Instant::now();
        if now.duration_since(written_out) >= WRITE_OUT_EVERY {
            state.merger.write_out()?;
            written_out = now;
        }
        let idle = open == 0 && state.merger.buffered() == 0;
        idle_trim.tick(idle, now, || state.merger.release_spare());
    }
    ingest.stop_accepting();
    let deadline = Instant::now() + options.drain;
    while ingest.open_connections() > 0 && Instant::now() < deadline {
        if let Ok(arrival) = rx.recv_timeout(Duration::from_millis(50)) {
            state.apply(arrival)?;
        }
    }
    ingest.close_all();
    let refused = ingest.refused();
    drop(ingest);
    while let Ok(arrival) = rx.recv_timeout(Duration::from_millis(200)) {
        state.apply(arrival)?;
    }
    status.clear();
    state.finish(refused)
}

/// The merge plus the mapping from connections to streams.
struct State<S: TimelineSink> {
    merger: Merger<S>,
    streams: HashMap<ConnId, StreamId>,
    bytes: Vec<u64>,
    events: u64,
    /// Connections closed before their hello, in the current second, and
    /// when that second began: a flood of them is not printed line by line.
    broken: (u32, Instant),
    /// All connections closed before their hello.
    broken_total: u64,
}

impl<S: TimelineSink> State<S> {
    fn new(merger: Merger<S>) -> Self {
        State {
            merger,
            streams: HashMap::new(),
            bytes: Vec::new(),
            events: 0,
            broken: (0, Instant::now()),
            broken_total: 0,
        }
    }

    fn apply(&mut self, arrival: Arrival) -> Result<()> {
        match arrival {
            Arrival::Hello {
                conn,
                process,
                encoder,
            } => {
                let id = self.merger.add_stream(process)?;
                let _ = encoder.send(self.merger.stream_encoder(id));
                self.streams.insert(conn, id);
                self.bytes.push(0);
            }
            Arrival::Chunks { conn, chunks } => {
                let Some(&id) = self.streams.get(&conn) else {
                    return Ok(());
                };
                for chunk in chunks {
                    self.events += crate::ingest::chunk_events(&chunk) as u64;
                    self.merger.push_chunk(id, chunk)?;
                }
            }
            Arrival::Closed {
                conn,
                end,
                error,
                bytes,
            } => {
                let stream = self.streams.get(&conn).copied();
                if let Some(error) = &error {
                    if stream.is_some() || self.print_broken() {
                        eprintln!("rtrace-collect: closed {error}");
                    }
                }
                if let Some(id) = stream {
                    self.bytes[id.0 as usize] = bytes;
                    self.merger.end_stream(id, end, error)?;
                }
            }
            Arrival::Refused { message } => eprintln!("rtrace-collect: {message}"),
        }
        Ok(())
    }

    /// Whether to print one more connection that broke before its hello
    /// (five a second at most).
    fn print_broken(&mut self) -> bool {
        if self.broken.1.elapsed() >= Duration::from_secs(1) {
            self.broken = (0, Instant::now());
        }
        self.broken.0 += 1;
        self.broken_total += 1;
        self.broken.0 <= 5
    }

    fn lost(&self) -> u64 {
        self.merger
            .stats()
            .iter()
            .filter_map(|s| s.end)
            .map(|e| e.lost)
            .sum()
    }

    fn finish(self, refused: u64) -> Result<Collected> {
        let (_, stats) = self.merger.finish()?;
        Ok(Collected {
            stats,
            bytes: self.bytes,
            refused,
            broken: self.broken_total,
        })
    }
}

/// The live status line: streams, events/s, lost, refreshed once a second.
struct Status {
    line: StatusLine,
    last: Instant,
    last_events: u64,
}

impl Status {
    fn new(wanted: bool) -> Status {
        let second = Duration::from_secs(1);
        Status {
            line: StatusLine::stderr(wanted, second, second),
            last: Instant::now(),
            last_events: 0,
        }
    }

    fn tick<S: TimelineSink>(&mut self, state: &State<S>, connected: usize) {
        let now = Instant::now();
        if !self.line.due(now) {
            return;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let rate = (state.events - self.last_events) as f64 / elapsed.max(1e-9);
        let text = format!(
            "streams: {connected} connected, {} seen | {rate:.0} events/s | {} events, {} lost",
            state.streams.len(),
            state.events,
            state.lost()
        );
        self.line.show(now, &text);
        self.last = now;
        self.last_events = state.events;
    }

    fn clear(&mut self) {
        self.line.clear();
    }
}
