//! Merges the items of many streams into one timeline in timestamp order,
//! with memory bounded by a reorder window rather than by trace length.
//!
//! Within a stream, each thread's events come in order, but batches of
//! different threads interleave: a thread that was blocked hands over old
//! events late. So the merge keeps one queue per thread (already sorted)
//! and a heap of the queues' heads: a k-way merge whose heap is as small as
//! the number of threads, and which keeps each thread's order even for an
//! event that comes late. Each stream's clock snapshots (its heartbeat) tell
//! how far it has advanced: a snapshot's promise (every event before a time
//! has been sent, which a Python recorder makes on each flush tick) at once,
//! or else its time less the reorder window. An event is released once every
//! open stream has advanced past it. An event that still arrives later than
//! what was already written is written at once and counted as late: nothing
//! is dropped.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

use crate::clock::ClockJump;
use crate::idmap::IdMap;
use crate::read::{Chunk, Encoded, Event, StreamItem};
use crate::timeline::{ClockOffset, ProcessInfo, StreamEncoder, StreamEnd, StreamId, TimelineSink};

/// Tuning of the merge.
#[derive(Debug, Clone, Copy)]
pub struct MergeConfig {
    /// How far behind its newest clock snapshot a stream that makes no
    /// completeness promise may still deliver events without them counting
    /// as late.
    pub window: Duration,
    /// Most events held for reordering; beyond it the oldest are written
    /// early (and what arrives behind them counts as late). A live merge
    /// holds about a window's worth of events (each ~30 bytes when the
    /// sink encodes ahead, 40 otherwise): eight processes tracing flat out
    /// on two cores make 5–8 M events a second.
    pub max_buffered: usize,
}

impl Default for MergeConfig {
    fn default() -> MergeConfig {
        MergeConfig {
            window: Duration::from_secs(1),
            max_buffered: 1 << 23,
        }
    }
}

/// What the merge saw of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    pub process: ProcessInfo,
    /// Events written to the output.
    pub events: u64,
    /// Events that arrived after newer ones had been written.
    pub late: u64,
    /// How the stream ended; `None` while it is open.
    pub end: Option<StreamEnd>,
    /// Why the stream was closed early, if it was (bad input).
    pub error: Option<String>,
    /// The collector's latest estimate of the stream's clock (`None`: no
    /// estimate was made, e.g. in an offline merge).
    pub clock: Option<ClockOffset>,
    /// Clock jumps seen in the stream.
    pub clock_jumps: u64,
    /// The first of them.
    pub first_jump: Option<ClockJump>,
    /// Events stamped earlier than their thread's previous event (after a
    /// clock jump, or when the clock estimate moved back), written at the
    /// previous event's time to keep the thread's order.
    pub clamped: u64,
}

impl StreamStats {
    /// A stream of `process` that has delivered nothing yet.
    pub fn new(process: ProcessInfo) -> Self {
        StreamStats {
            process,
            events: 0,
            late: 0,
            end: None,
            error: None,
            clock: None,
            clock_jumps: 0,
            first_jump: None,
            clamped: 0,
        }
    }
}

/// A thread's events waiting to be written, oldest first: the batches as
/// they were read (never empty), so that events are neither copied nor
/// moved one by one, and go to the sink in runs.
struct ThreadQueue {
    stream: StreamId,
    batches: VecDeque<Batch>,
    /// Events of the front batch already written.
    written: usize,
    /// Timestamp of the thread's newest event so far.
    last_ts_ns: u64,
    /// True while the queue's head is in the heap.
    in_heap: bool,
}

/// One queue of the heap while `Merger::write_turns` writes: its front
/// batch if encoded, where its head was, is now, and the newest written.
struct Turn<'a> {
    stream: StreamId,
    encoded: Option<&'a Encoded>,
    from: usize,
    at: usize,
    newest_ns: u64,
}

/// The order of the queues' heads, as `take_turns` uses it (never empty).
trait TurnOrder {
    fn top(&self) -> Head;
    fn second_ts_ns(&self) -> u64;
    fn replace_top(&mut self, head: Head);
}

impl TurnOrder for Heads {
    #[inline(always)]
    fn top(&self) -> Head {
        self.0[0]
    }
    #[inline(always)]
    fn second_ts_ns(&self) -> u64 {
        Heads::second_ts_ns(self)
    }
    #[inline(always)]
    fn replace_top(&mut self, head: Head) {
        Heads::replace_top(self, Some(head));
    }
}

/// Two heads, the older first.
struct Pair([Head; 2]);

impl TurnOrder for Pair {
    #[inline(always)]
    fn top(&self) -> Head {
        self.0[0]
    }
    #[inline(always)]
    fn second_ts_ns(&self) -> u64 {
        self.0[1].ts_ns
    }
    #[inline(always)]
    fn replace_top(&mut self, head: Head) {
        let other = self.0[1];
        self.0 = if head < other {
            [head, other]
        } else {
            [other, head]
        };
    }
}

/// `Merger::write_turns`'s runs: writes the oldest head's run, up to the
/// next oldest head, and puts it back, until a run would reach its batch's
/// end, a front batch is not encoded, or nothing more is due. `order`'s
/// heads name places in `turns`.
fn take_turns<S: TimelineSink>(
    sink: &mut S,
    order: &mut impl TurnOrder,
    turns: &mut [Turn],
    horizon: u64,
) -> io::Result<()> {
    loop {
        let head = order.top();
        if head.ts_ns > horizon {
            return Ok(());
        }
        let limit = horizon.min(order.second_ts_ns());
        let turn = &mut turns[head.queue];
        let Some(encoded) = turn.encoded else {
            return Ok(());
        };
        let from = turn.at;
        let (n, newest_ns) = due(&encoded.ts_ns[from..], |&t| t, true, limit);
        let to = from + n;
        let Some(&next_ns) = encoded.ts_ns.get(to) else {
            return Ok(()); // the batch's last run
        };
        let written = sink.encoded_events(
            turn.stream,
            &encoded.ts_ns[from..to],
            encoded.range(from, to),
        );
        // Counted as written even if the sink failed, as `write_oldest` does.
        (turn.at, turn.newest_ns) = (to, newest_ns);
        order.replace_top(Head {
            ts_ns: next_ns,
            queue: head.queue,
        });
        written?;
    }
}

/// One batch of a thread's events, or of their encodings (see
/// `TimelineSink::stream_encoder`).
enum Batch {
    Events(Vec<Event>),
    Encoded(Encoded),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Events(events) => events.len(),
            Batch::Encoded(encoded) => encoded.ts_ns.len(),
        }
    }

    fn ts_ns(&self, i: usize) -> u64 {
        match self {
            Batch::Events(events) => events[i].ts_ns,
            Batch::Encoded(encoded) => encoded.ts_ns[i],
        }
    }

    /// Moves events stamped before their predecessor (the first: before
    /// `floor`) to the predecessor's time; returns how many moved and the
    /// newest time. An encoded batch's bytes keep their times: batches are
    /// kept in order before they are encoded (see `ThreadOrder`).
    fn clamp(&mut self, floor: u64) -> (u64, u64) {
        let (mut clamped, mut last) = (0, floor);
        let mut apply = |ts: &mut u64| {
            if *ts < last {
                *ts = last;
                clamped += 1;
            }
            last = *ts;
        };
        match self {
            Batch::Events(events) => events.iter_mut().for_each(|e| apply(&mut e.ts_ns)),
            Batch::Encoded(encoded) => encoded.ts_ns.iter_mut().for_each(apply),
        }
        (clamped, last)
    }

    /// How many events from `from` on are older than `ts_ns` (the batch
    /// is in order: clamped).
    fn count_before(&self, from: usize, ts_ns: u64) -> usize {
        match self {
            Batch::Events(events) => events[from..].partition_point(|e| e.ts_ns < ts_ns),
            Batch::Encoded(encoded) => encoded.ts_ns[from..].partition_point(|&t| t < ts_ns),
        }
    }

    /// How many events from `from` on are due: the first if `first`, then
    /// those up to `limit`; and the newest timestamp among them.
    fn due(&self, from: usize, first: bool, limit: u64) -> (usize, u64) {
        match self {
            Batch::Events(events) => due(&events[from..], |e| e.ts_ns, first, limit),
            Batch::Encoded(encoded) => due(&encoded.ts_ns[from..], |&t| t, first, limit),
        }
    }

    /// Hands events `from..to` to the sink.
    fn write<S: TimelineSink>(
        &self,
        sink: &mut S,
        stream: StreamId,
        from: usize,
        to: usize,
    ) -> io::Result<()> {
        match self {
            Batch::Events(events) => sink.events(stream, &events[from..to]),
            Batch::Encoded(encoded) => {
                sink.encoded_events(stream, &encoded.ts_ns[from..to], encoded.range(from, to))
            }
        }
    }
}

/// How many of `items` (in time order: batches are clamped) are due: the
/// first if `first`, then those up to `limit`; and the newest time among
/// them. A galloping search: as cheap as a scan when a few are due (streams
/// interleaving finely), logarithmic when a whole batch is (the common
/// case, and every batch when the window is written at the end).
fn due<T>(items: &[T], ts_ns: impl Fn(&T) -> u64, first: bool, limit: u64) -> (usize, u64) {
    let Some(head) = items.first() else {
        return (0, 0);
    };
    if ts_ns(head) > limit {
        return if first { (1, ts_ns(head)) } else { (0, 0) };
    }
    // items[bound / 2] is due; find a bound that is not (or the end).
    let mut bound = 1;
    while bound < items.len() && ts_ns(&items[bound]) <= limit {
        bound *= 2;
    }
    let known = bound / 2 + 1;
    let rest = &items[known..bound.min(items.len())];
    let n = known + rest.partition_point(|item| ts_ns(item) <= limit);
    (n, ts_ns(&items[n - 1]))
}

impl ThreadQueue {
    /// The time of the oldest event waiting.
    fn front(&self) -> Option<u64> {
        self.batches.front().map(|batch| batch.ts_ns(self.written))
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Appends a batch (of at least one event), of which the first
    /// `written` are written already (an empty queue only).
    fn push(&mut self, batch: Batch, written: usize) {
        if self.batches.is_empty() {
            self.written = written;
        }
        match (self.batches.back_mut(), batch) {
            // Single events join the last batch rather than make their own.
            (Some(Batch::Events(last)), Batch::Events(events))
                if events.len() == 1 && last.len() < 1024 =>
            {
                last.extend(events)
            }
            (_, batch) => self.batches.push_back(batch),
        }
    }

    /// Marks the first `n` waiting events (all in the front batch)
    /// written; `whole` when they are the rest of that batch.
    /// Marks `n` more events of the front batch written; the batch itself,
    /// if that was the rest of it (`whole`).
    fn consume(&mut self, n: usize, whole: bool) -> Option<Batch> {
        if whole {
            self.written = 0;
            self.batches.pop_front()
        } else {
            self.written += n;
            None
        }
    }
}

/// A heap entry: the head of one thread queue. Ordered by time, then
/// queue (so that equal times are written in a fixed order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    ts_ns: u64,
    queue: usize,
}

impl Head {
    /// The order as one number: one comparison instead of two.
    #[inline]
    fn key(&self) -> u128 {
        (u128::from(self.ts_ns) << 64) | self.queue as u128
    }
}

impl Ord for Head {
    #[inline]
    fn cmp(&self, other: &Head) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Head {
    #[inline]
    fn partial_cmp(&self, other: &Head) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A binary min-heap of queue heads that also shows the second smallest,
/// and replaces its top with one sift: the merge takes the oldest queue's
/// events up to the next oldest queue's head, then puts the queue back,
/// often more than once per event when streams interleave finely.
#[derive(Debug, Default)]
struct Heads(Vec<Head>);

impl Heads {
    fn top(&self) -> Option<Head> {
        self.0.first().copied()
    }

    /// The time of the smallest head after the top (`u64::MAX`: none).
    fn second_ts_ns(&self) -> u64 {
        let child = |i: usize| self.0.get(i).map_or(u64::MAX, |h| h.ts_ns);
        child(1).min(child(2))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, head: Head) {
        let mut i = self.0.len();
        self.0.push(head);
        while i > 0 && self.0[(i - 1) / 2] > self.0[i] {
            self.0.swap(i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
    }

    /// Replaces the top with `head`, or removes it. A sift with a hole:
    /// children move up and the new head is stored once, where it belongs
    /// (a head written as two words, then swapped with a wide load, stalled
    /// on store forwarding: half of this function's samples).
    #[inline(always)]
    fn replace_top(&mut self, head: Option<Head>) {
        let head = match head {
            Some(head) => head,
            None => match self.0.pop() {
                Some(last) if !self.0.is_empty() => last,
                _ => return, // the top was the only head
            },
        };
        let heap = &mut self.0[..];
        let key = head.key();
        let mut hole = 0;
        loop {
            let left = 2 * hole + 1;
            let Some(left_head) = heap.get(left) else {
                break;
            };
            // The smaller child (heads are distinct: each names its queue).
            let (mut least, mut least_key) = (left, left_head.key());
            if let Some(right) = heap.get(left + 1) {
                if right.key() < least_key {
                    (least, least_key) = (left + 1, right.key());
                }
            }
            if least_key >= key {
                break;
            }
            heap[hole] = heap[least];
            hole = least;
        }
        heap[hole] = head;
    }
}

struct Slot {
    stats: StreamStats,
    /// No event of this stream still to come is older than this.
    watermark_ns: u64,
    open: bool,
    /// Events of this stream waiting in the heap.
    pending: u64,
    /// The end was reported to the sink.
    ended: bool,
    last_ts_ns: u64,
}

/// The merge. Feed it with `add_stream`, `push` and `end_stream`, in any
/// interleaving of streams; close with `finish`.
pub struct Merger<S: TimelineSink> {
    sink: S,
    window_ns: u64,
    max_buffered: usize,
    slots: Vec<Slot>,
    queues: Vec<ThreadQueue>,
    queue_of: IdMap<(StreamId, u64), usize>,
    last_queue: Option<((StreamId, u64), usize)>,
    heap: Heads,
    buffered: usize,
    written_ns: u64,
    /// Live merges: the collector's clock; no event newer than it is
    /// written (see `advance`).
    live_horizon_ns: Option<u64>,
    /// Whether `write_turns` may run (tests compare it with the general
    /// path).
    turns: bool,
    /// `write_turns`'s copy of the heap (kept for its room).
    turn_heads: Heads,
}

impl<S: TimelineSink> Merger<S> {
    pub fn new(sink: S, config: MergeConfig) -> Merger<S> {
        Merger {
            sink,
            window_ns: config.window.as_nanos().min(u128::from(u64::MAX)) as u64,
            max_buffered: config.max_buffered.max(1),
            slots: Vec::new(),
            queues: Vec::new(),
            queue_of: IdMap::default(),
            last_queue: None,
            heap: Heads::default(),
            buffered: 0,
            written_ns: 0,
            live_horizon_ns: None,
            turns: true,
            turn_heads: Heads::default(),
        }
    }

    /// For a live merge: the collector's clock reads `now_ns` (same time
    /// base as the streams). Events older than it are written once every
    /// open stream has passed them. A process that has not connected yet
    /// holds nothing back: the collector registers a stream before it
    /// answers its hello, and a recorder stamps its first event after the
    /// answer, so its events are all newer than anything released before.
    pub fn advance(&mut self, now_ns: u64) -> io::Result<()> {
        self.live_horizon_ns = Some(now_ns);
        self.release()
    }

    /// Registers a stream and describes its process to the sink.
    pub fn add_stream(&mut self, process: ProcessInfo) -> io::Result<StreamId> {
        let id = StreamId(self.slots.len() as u32);
        self.sink.process(id, &process)?;
        self.slots.push(Slot {
            stats: StreamStats::new(process),
            watermark_ns: 0,
            open: true,
            pending: 0,
            ended: false,
            last_ts_ns: 0,
        });
        Ok(id)
    }

    /// Adds one item of a stream (in that stream's order).
    pub fn push(&mut self, stream: StreamId, item: StreamItem) -> io::Result<()> {
        match item {
            StreamItem::Function(f) => self.sink.function(stream, &f),
            StreamItem::Thread { tid, name } => self.sink.thread(stream, tid, &name),
            StreamItem::Clock {
                monotonic_ns,
                complete_ns,
            } => {
                if let Some(slot) = self.slots.get_mut(stream.0 as usize) {
                    // A recorder that promises completeness needs no window.
                    let mark = monotonic_ns.saturating_sub(self.window_ns);
                    let mark = mark.max(complete_ns.unwrap_or(0));
                    slot.watermark_ns = slot.watermark_ns.max(mark);
                }
                self.release()
            }
            StreamItem::Event(event) => {
                let tid = event.tid;
                self.push_events(stream, tid, Batch::Events(vec![event]))
            }
            StreamItem::ClockJump(jump) => {
                if let Some(slot) = self.slots.get_mut(stream.0 as usize) {
                    slot.stats.clock_jumps += 1;
                    slot.stats.first_jump.get_or_insert(jump);
                }
                self.sink.clock_jump(stream, &jump)
            }
            StreamItem::Offset(offset) => {
                if let Some(slot) = self.slots.get_mut(stream.0 as usize) {
                    slot.stats.clock = Some(offset);
                }
                self.sink.clock_offset(stream, &offset)
            }
            StreamItem::Clamped(n) => {
                if let Some(slot) = self.slots.get_mut(stream.0 as usize) {
                    slot.stats.clamped += n;
                }
                Ok(())
            }
            // Handled by the collector before the merge.
            StreamItem::Ping { .. } | StreamItem::Sync(_) => Ok(()),
        }
    }

    /// Adds one chunk of a stream (in that stream's order): the same as
    /// pushing its items one by one, but a batch of events goes in whole.
    pub fn push_chunk(&mut self, stream: StreamId, chunk: Chunk) -> io::Result<()> {
        match chunk {
            Chunk::Item(item) => self.push(stream, item),
            Chunk::Events { tid, events } => self.push_events(stream, tid, Batch::Events(events)),
            Chunk::Plain { tid, plain } => {
                let events = plain.into_events(tid);
                self.push_events(stream, tid, Batch::Events(events))
            }
            Chunk::Encoded { tid, encoded } => {
                if encoded.ends.len() != encoded.ts_ns.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "an encoded batch without an end for each event",
                    ));
                }
                self.push_events(stream, tid, Batch::Encoded(encoded))
            }
        }
    }

    /// An encoder for the stream's events, if the sink has one (see
    /// `TimelineSink::stream_encoder`): its chunks then carry their bytes.
    pub fn stream_encoder(&mut self, stream: StreamId) -> Option<Box<dyn StreamEncoder>> {
        self.sink.stream_encoder(stream)
    }

    /// Queues events of one thread of a stream, in the thread's order.
    fn push_events(&mut self, stream: StreamId, tid: u64, mut batch: Batch) -> io::Result<()> {
        let n = batch.len();
        if stream.0 as usize >= self.slots.len() || n == 0 {
            return Ok(());
        }
        let q = self.queue_index(stream, tid);
        // Keep the thread's order whatever the timestamps say.
        let (clamped, newest) = batch.clamp(self.queues[q].last_ts_ns);
        self.queues[q].last_ts_ns = newest;
        self.slots[stream.0 as usize].stats.clamped += clamped;
        // Events older than what was written are late; while the thread has
        // nothing waiting they are written at once, else they follow the
        // events of their thread that wait, to keep the thread's order.
        let mut skip = 0;
        if self.queues[q].is_empty() {
            while skip < n && batch.ts_ns(skip) < self.written_ns {
                self.slots[stream.0 as usize].stats.late += 1;
                self.note_written(stream, 1, batch.ts_ns(skip));
                batch.write(&mut self.sink, stream, skip, skip + 1)?;
                skip += 1;
            }
            if skip == n {
                if let Batch::Encoded(done) = batch {
                    self.sink.recycle(done);
                }
                return Ok(());
            }
        }
        // In order now: the late ones are a prefix.
        let late = batch.count_before(skip, self.written_ns) as u64;
        let slot = &mut self.slots[stream.0 as usize];
        slot.stats.late += late;
        slot.pending += (n - skip) as u64;
        self.buffered += n - skip;
        let queue = &mut self.queues[q];
        queue.push(batch, skip);
        if !queue.in_heap {
            queue.in_heap = true;
            let ts_ns = queue.front().unwrap_or(0);
            self.heap.push(Head { ts_ns, queue: q });
        }
        while self.buffered > self.max_buffered {
            self.write_oldest(u64::MAX)?;
        }
        Ok(())
    }

    /// The queue of a stream's thread, created on first use.
    fn queue_index(&mut self, stream: StreamId, tid: u64) -> usize {
        let key = (stream, tid);
        if let Some((last, q)) = self.last_queue {
            if last == key {
                return q;
            }
        }
        let queues = &mut self.queues;
        let q = *self.queue_of.entry(key).or_insert_with(|| {
            queues.push(ThreadQueue {
                stream,
                batches: VecDeque::new(),
                written: 0,
                last_ts_ns: 0,
                in_heap: false,
            });
            queues.len() - 1
        });
        self.last_queue = Some((key, q));
        q
    }

    /// The stream has ended (cleanly, truncated, or closed for an error).
    pub fn end_stream(
        &mut self,
        stream: StreamId,
        end: StreamEnd,
        error: Option<String>,
    ) -> io::Result<()> {
        if let Some(slot) = self.slots.get_mut(stream.0 as usize) {
            slot.open = false;
            slot.stats.end = Some(end);
            slot.stats.error = error;
        }
        self.release()?;
        self.report_ends()
    }

    /// Writes every event no open stream can still precede.
    fn release(&mut self) -> io::Result<()> {
        let horizon = self
            .slots
            .iter()
            .filter(|s| s.open)
            .map(|s| s.watermark_ns)
            .min()
            .unwrap_or(u64::MAX)
            .min(self.live_horizon_ns.unwrap_or(u64::MAX));
        while self.heap.top().is_some_and(|h| h.ts_ns <= horizon) {
            if !self.write_turns(horizon)? {
                self.write_oldest(horizon)?;
            }
        }
        self.report_ends()
    }

    /// While the oldest queue's front batch is encoded, writes its run (up
    /// to the next oldest head, as `write_oldest` would) and puts the queue
    /// back in the heap, run after run, and settles the queues and the
    /// counts once at the end: when streams (or threads) interleave finely,
    /// runs are an event or two, and the per-run bookkeeping was about half
    /// of the merge's CPU. The runs are taken from a copy of the heap whose
    /// entries name places in `turns` (in the order of the queues they
    /// stand for, so that equal times go as in the heap), each holding its
    /// front batch at hand. Stops before a run that would reach its
    /// batch's end (`write_oldest` carries such a run on into the queue's
    /// next batch, where a tie with another head matters), at a front batch
    /// that is not encoded, and when nothing more is due: the heap it
    /// leaves is the one `write_oldest` would have. Returns whether it
    /// wrote anything.
    fn write_turns(&mut self, horizon: u64) -> io::Result<bool> {
        // A cheap look first: with a sink that encodes nothing (Chrome
        // JSON), no batch is encoded, and this is asked before every run.
        let top_encoded =
            |q: usize| matches!(self.queues[q].batches.front(), Some(Batch::Encoded(_)));
        if !self.turns || self.heap.0.len() < 2 || !top_encoded(self.heap.0[0].queue) {
            return Ok(false);
        }
        let mut queues: Vec<usize> = self.heap.0.iter().map(|h| h.queue).collect();
        queues.sort_unstable();
        let mut turns: Vec<Turn> = queues
            .iter()
            .map(|&q| {
                let queue = &self.queues[q];
                Turn {
                    stream: queue.stream,
                    encoded: match queue.batches.front() {
                        Some(Batch::Encoded(encoded)) => Some(encoded),
                        _ => None,
                    },
                    from: queue.written,
                    at: queue.written,
                    newest_ns: 0,
                }
            })
            .collect();
        let heads = &mut self.turn_heads;
        heads.0.clear();
        heads.0.extend(self.heap.0.iter().map(|h| Head {
            ts_ns: h.ts_ns,
            queue: queues.partition_point(|&q| q < h.queue),
        }));
        let result = match heads.0[..] {
            // Two streams (or threads) side by side: the pair needs no heap.
            [older, newer] => {
                let mut pair = Pair([older, newer]);
                let result = take_turns(&mut self.sink, &mut pair, &mut turns, horizon);
                heads.0.copy_from_slice(&pair.0);
                result
            }
            _ => take_turns(&mut self.sink, heads, &mut turns, horizon),
        };
        // What each queue wrote; then `turns` (which borrows the queues'
        // batches) is done with.
        let written: Vec<(StreamId, usize, u64)> = turns
            .iter()
            .map(|t| (t.stream, t.at - t.from, t.newest_ns))
            .collect();
        let mut wrote = false;
        for (&q, &(stream, n, newest_ns)) in queues.iter().zip(&written) {
            if n > 0 {
                // Within the front batch: the queue's head moves on in it.
                self.queues[q].consume(n, false);
                self.count_written(stream, n, newest_ns);
                wrote = true;
            }
        }
        // Places are in the queues' order: the copy is still a heap.
        self.heap.0.clear();
        self.heap.0.extend(self.turn_heads.0.iter().map(|h| Head {
            ts_ns: h.ts_ns,
            queue: queues[h.queue],
        }));
        result.map(|()| wrote)
    }

    /// Writes the oldest queue's events up to `horizon`, for as long as
    /// they stay older than every other queue's head. When streams
    /// interleave finely this runs once per event or two, so its
    /// bookkeeping is done once per call, not per batch.
    fn write_oldest(&mut self, horizon: u64) -> io::Result<()> {
        let Some(head) = self.heap.top() else {
            return Ok(());
        };
        let q = head.queue;
        let limit = horizon.min(self.heap.second_ts_ns());
        let queue = &mut self.queues[q];
        let stream = queue.stream;
        let (mut written, mut newest) = (0, 0);
        let mut result = Ok(());
        // The first event goes regardless: it is the oldest head.
        let mut first = true;
        while let Some(batch) = queue.batches.front() {
            let from = queue.written;
            let (n, batch_newest) = batch.due(from, first, limit);
            first = false;
            if n == 0 {
                break;
            }
            let whole = from + n == batch.len();
            (written, newest) = (written + n, newest.max(batch_newest));
            result = batch.write(&mut self.sink, stream, from, from + n);
            if let Some(Batch::Encoded(done)) = queue.consume(n, whole) {
                self.sink.recycle(done);
            }
            if !whole || result.is_err() {
                break;
            }
        }
        let next = queue.front().map(|ts_ns| Head { ts_ns, queue: q });
        queue.in_heap = next.is_some();
        self.heap.replace_top(next);
        self.count_written(stream, written, newest);
        result
    }

    /// `n` events of `stream` left the queues for the sink, the newest at
    /// `newest_ns`.
    fn count_written(&mut self, stream: StreamId, n: usize, newest_ns: u64) {
        self.buffered -= n;
        self.note_written(stream, n, newest_ns);
        if let Some(slot) = self.slots.get_mut(stream.0 as usize) {
            slot.pending -= n as u64;
        }
    }

    fn note_written(&mut self, stream: StreamId, n: usize, newest_ns: u64) {
        note_written(&mut self.slots, &mut self.written_ns, stream, n, newest_ns);
    }

    /// Tells the sink about streams that ended and have nothing pending.
    fn report_ends(&mut self) -> io::Result<()> {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.open || slot.ended || slot.pending > 0 {
                continue;
            }
            slot.ended = true;
            let mut end = slot.stats.end.unwrap_or_default();
            end.last_ts_ns = slot.last_ts_ns;
            slot.stats.end = Some(end);
            self.sink.stream_end(StreamId(i as u32), &end)?;
        }
        Ok(())
    }

    /// The lowest watermark of the open streams (which stream to read next
    /// when pulling from files).
    pub fn lagging_stream(&self) -> Option<StreamId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.open)
            .min_by_key(|(_, s)| s.watermark_ns)
            .map(|(i, _)| StreamId(i as u32))
    }

    /// Events held for reordering right now.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Frees what the sink keeps for reuse (`TimelineSink::release_spare`).
    pub fn release_spare(&mut self) {
        self.sink.release_spare();
    }

    /// Passes what the sink has buffered on to its file
    /// (`TimelineSink::write_out`).
    pub fn write_out(&mut self) -> io::Result<()> {
        self.sink.write_out()
    }

    /// Stats of every stream so far.
    pub fn stats(&self) -> Vec<StreamStats> {
        self.slots.iter().map(|s| s.stats.clone()).collect()
    }

    /// Writes everything still held, ends streams still open as truncated,
    /// finishes the output, and returns the sink and the stats.
    pub fn finish(mut self) -> io::Result<(S, Vec<StreamStats>)> {
        for slot in &mut self.slots {
            if slot.open {
                slot.open = false;
                let end = slot.stats.end.get_or_insert_with(StreamEnd::default);
                end.truncated = true;
            }
        }
        while !self.heap.is_empty() {
            self.write_oldest(u64::MAX)?;
        }
        self.report_ends()?;
        self.sink.finish()?;
        let stats = self.stats();
        Ok((self.sink, stats))
    }
}

/// Keeps each thread of one stream in order before its events are encoded
/// ahead of the merge (see `TimelineSink::stream_encoder`): an event
/// stamped before its thread's previous event (after a clock jump, or when
/// a clock estimate moved back) moves to that event's time, in the bytes
/// too. The merge does the same for what reaches it unencoded.
#[derive(Debug, Default)]
pub struct ThreadOrder {
    last_ts_ns: HashMap<u64, u64>,
}

impl ThreadOrder {
    /// Applies the thread order to `chunks` (one stream's, in its order);
    /// when events moved, appends a `StreamItem::Clamped` that counts them.
    pub fn chunks(&mut self, chunks: &mut Vec<Chunk>) {
        let clamped: u64 = chunks.iter_mut().map(|c| self.chunk(c)).sum();
        if clamped > 0 {
            chunks.push(Chunk::Item(StreamItem::Clamped(clamped)));
        }
    }

    /// Applies the thread order to the next chunk of the stream; returns
    /// how many of its events moved (for a `StreamItem::Clamped`).
    pub fn chunk(&mut self, chunk: &mut Chunk) -> u64 {
        match chunk {
            Chunk::Events { tid, events } => {
                self.clamp(*tid, events.iter_mut().map(|e| &mut e.ts_ns))
            }
            Chunk::Plain { tid, plain } => self.clamp(*tid, plain.ts_ns_mut().iter_mut()),
            Chunk::Item(StreamItem::Event(event)) => {
                self.clamp(event.tid, std::iter::once(&mut event.ts_ns))
            }
            _ => 0,
        }
    }

    /// Moves each of thread `tid`'s next timestamps that is older than
    /// the one before it to that one's; returns how many moved.
    fn clamp<'a>(&mut self, tid: u64, times: impl Iterator<Item = &'a mut u64>) -> u64 {
        let last = self.last_ts_ns.entry(tid).or_insert(0);
        let mut clamped = 0;
        for ts_ns in times {
            if *ts_ns < *last {
                *ts_ns = *last;
                clamped += 1;
            }
            *last = *ts_ns;
        }
        clamped
    }
}

/// Counts `n` events of `stream` written, the newest at `newest_ns`, and
/// moves the written time on.
fn note_written(
    slots: &mut [Slot],
    written_ns: &mut u64,
    stream: StreamId,
    n: usize,
    newest_ns: u64,
) {
    *written_ns = (*written_ns).max(newest_ns);
    if let Some(slot) = slots.get_mut(stream.0 as usize) {
        slot.stats.events += n as u64;
        slot.last_ts_ns = slot.last_ts_ns.max(newest_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FunctionId, Kind};
    use crate::writer::FunctionInfo;

    #[derive(Default)]
    struct Recorded {
        log: Vec<String>,
        events: Vec<(u32, u64)>,
        /// The thread of each event given as an `Event`.
        tids: Vec<u64>,
        /// Encoded batches given back.
        recycled: usize,
    }

    impl TimelineSink for Recorded {
        fn process(&mut self, s: StreamId, p: &ProcessInfo) -> io::Result<()> {
            self.log.push(format!("process {} {}", s.0, p.pid));
            Ok(())
        }
        fn function(&mut self, s: StreamId, f: &FunctionInfo) -> io::Result<()> {
            self.log.push(format!("function {} {}", s.0, f.name));
            Ok(())
        }
        fn thread(&mut self, s: StreamId, tid: u64, name: &str) -> io::Result<()> {
            self.log.push(format!("thread {} {tid} {name}", s.0));
            Ok(())
        }
        fn event(&mut self, s: StreamId, e: &Event) -> io::Result<()> {
            self.events.push((s.0, e.ts_ns));
            self.tids.push(e.tid);
            Ok(())
        }
        fn encoded_events(&mut self, s: StreamId, ts_ns: &[u64], bytes: &[u8]) -> io::Result<()> {
            self.events.extend(ts_ns.iter().map(|&t| (s.0, t)));
            self.log.push(format!("bytes {} {bytes:?}", s.0));
            Ok(())
        }
        fn stream_end(&mut self, s: StreamId, end: &StreamEnd) -> io::Result<()> {
            self.log.push(format!("end {} {}", s.0, end.truncated));
            Ok(())
        }
        fn finish(&mut self) -> io::Result<()> {
            self.log.push("finish".into());
            Ok(())
        }
        fn recycle(&mut self, _encoded: Encoded) {
            self.recycled += 1;
        }
    }

    fn ev(ts_ns: u64) -> StreamItem {
        StreamItem::Event(Event {
            ts_ns,
            tid: 1,
            kind: Kind::Call,
            function: FunctionId(0),
            line: 0,
            mark: None,
            text: None,
        })
    }

    fn clock(ns: u64) -> StreamItem {
        StreamItem::Clock {
            monotonic_ns: ns,
            complete_ns: None,
        }
    }

    /// A snapshot at `ns` promising every event before `complete_ns` sent.
    fn promise(ns: u64, complete_ns: u64) -> StreamItem {
        StreamItem::Clock {
            monotonic_ns: ns,
            complete_ns: Some(complete_ns),
        }
    }

    /// Each thread's times, in order, of `chunks`.
    fn thread_times(chunks: &[Chunk]) -> HashMap<u64, Vec<u64>> {
        let mut times: HashMap<u64, Vec<u64>> = HashMap::new();
        for chunk in chunks {
            match chunk {
                Chunk::Plain { tid, plain } => {
                    times.entry(*tid).or_default().extend(plain.ts_ns());
                }
                Chunk::Events { tid, events } => {
                    times
                        .entry(*tid)
                        .or_default()
                        .extend(events.iter().map(|e| e.ts_ns));
                }
                Chunk::Item(StreamItem::Event(e)) => times.entry(e.tid).or_default().push(e.ts_ns),
                _ => {}
            }
        }
        times
    }

    /// The thread order moves a thread's times forward alike whether its
    /// events come as columns, as events or one by one, and counts them.
    #[test]
    fn the_thread_order_keeps_each_threads_times_in_every_kind_of_chunk() {
        let plain = |tid, times: &[u64]| {
            let mut plain = crate::read::Plain::default();
            for &ts_ns in times {
                plain.push(ts_ns, FunctionId(0), Kind::Call);
            }
            Chunk::Plain { tid, plain }
        };
        let StreamItem::Event(mut late) = ev(60) else {
            unreachable!()
        };
        late.tid = 2;
        let mut chunks = vec![
            plain(1, &[100, 50, 70, 200]),
            plain(2, &[80]),
            Chunk::Events {
                tid: 1,
                events: vec![late.clone(), late.clone()]
                    .into_iter()
                    .map(|e| Event {
                        tid: 1,
                        ts_ns: 150,
                        ..e
                    })
                    .collect(),
            },
            Chunk::Item(StreamItem::Event(late)),
            plain(1, &[210, 205]),
        ];
        ThreadOrder::default().chunks(&mut chunks);
        let times = thread_times(&chunks);
        assert_eq!(times[&1], [100, 100, 100, 200, 200, 200, 210, 210]);
        assert_eq!(times[&2], [80, 80]);
        assert!(matches!(
            chunks.last(),
            Some(Chunk::Item(StreamItem::Clamped(6)))
        ));
    }

    /// The galloping `due` counts what a scan counts, for every limit
    /// around every time of runs of equal and rising times.
    #[test]
    fn due_counts_what_a_scan_counts() {
        let scan = |ts: &[u64], first: bool, limit: u64| {
            let n = ts
                .iter()
                .enumerate()
                .take_while(|&(i, &t)| t <= limit || (first && i == 0))
                .count();
            (n, ts[..n].iter().copied().max().unwrap_or(0))
        };
        for len in 0..40u64 {
            let ts: Vec<u64> = (0..len).map(|i| 10 + i / 3 * 5).collect();
            for limit in 0..(20 + len * 2) {
                for first in [false, true] {
                    assert_eq!(
                        due(&ts, |&t| t, first, limit),
                        scan(&ts, first, limit),
                        "{ts:?} first {first} limit {limit}"
                    );
                }
            }
        }
    }

    fn config(window_ns: u64, max_buffered: usize) -> MergeConfig {
        MergeConfig {
            window: Duration::from_nanos(window_ns),
            max_buffered,
        }
    }

    /// A batch of encoded events at `times`, each event's bytes naming its
    /// stream, thread and index, of varying lengths.
    fn encoded(stream: u8, tid: u64, times: &[u64]) -> Chunk {
        let mut encoded = Encoded::default();
        for (i, &t) in times.iter().enumerate() {
            encoded.ts_ns.push(t);
            let len = 1 + (t % 3) as usize;
            encoded
                .bytes
                .extend(std::iter::repeat_n([stream, tid as u8, i as u8], len).flatten());
            encoded.ends.push(encoded.bytes.len() as u32);
        }
        Chunk::Encoded { tid, encoded }
    }

    #[test]
    fn taking_turns_writes_what_the_general_path_writes() {
        // Random fine interleavings of encoded batches, with promises moving
        // the horizon between pushes: two streams; two threads of one stream
        // and a third stream that ends early; five threads over four
        // streams. Equal times are common (steps of 0 to 3 ns), and some
        // batches are plain events, which only the general path writes.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for case in 0..600 {
            let queues: &[(u8, u64)] = match case % 3 {
                0 => &[(0, 1), (1, 1)],
                1 => &[(0, 1), (0, 2), (1, 1)],
                _ => &[(0, 1), (1, 1), (2, 1), (2, 2), (3, 1)],
            };
            let mut pushes = Vec::new();
            let mut clock = vec![0u64; queues.len()];
            for _ in 0..6 * queues.len() {
                let q = next(queues.len() as u64) as usize;
                let n = 1 + next(40) as usize;
                let times: Vec<u64> = (0..n)
                    .map(|_| {
                        clock[q] += next(4);
                        clock[q]
                    })
                    .collect();
                pushes.push((queues[q], times, next(8) == 0));
            }
            let run = |turns: bool| {
                let mut m = Merger::new(Recorded::default(), config(1_000, 1 << 20));
                m.turns = turns;
                let streams = [0, 1, 2, 3].map(|_| m.add_stream(ProcessInfo::default()).unwrap());
                for (i, ((stream, tid), times, plain)) in pushes.iter().enumerate() {
                    let id = streams[*stream as usize];
                    let chunk = if *plain {
                        let events = times
                            .iter()
                            .map(|&ts_ns| match ev(ts_ns) {
                                StreamItem::Event(e) => Event { tid: *tid, ..e },
                                _ => unreachable!(),
                            })
                            .collect();
                        Chunk::Events { tid: *tid, events }
                    } else {
                        encoded(*stream, *tid, times)
                    };
                    m.push_chunk(id, chunk).unwrap();
                    let at = times.last().copied().unwrap_or(0);
                    m.push(id, promise(at, at.saturating_sub(i as u64 % 5)))
                        .unwrap();
                    if case % 4 == 1 && i == 6 {
                        m.end_stream(streams[1], StreamEnd::default(), None)
                            .unwrap();
                    }
                }
                let (sink, stats) = m.finish().unwrap();
                (sink.events, (sink.log, sink.tids), stats, sink.recycled)
            };
            let (turns, general) = (run(true), run(false));
            assert_eq!(turns.0, general.0, "case {case}: events");
            assert_eq!(turns.1, general.1, "case {case}: bytes and the rest");
            assert_eq!(turns.2, general.2, "case {case}: stats");
            let written: usize = pushes.iter().map(|(_, t, _)| t.len()).sum();
            assert_eq!(turns.0.len(), written, "case {case}: every event");
            // Every encoded batch, once written, is given back to the sink
            // for its buffers, on either path.
            let encoded_batches = pushes.iter().filter(|(_, _, plain)| !plain).count();
            assert_eq!(turns.3, encoded_batches, "case {case}: given back (turns)");
            assert_eq!(general.3, encoded_batches, "case {case}: given back");
        }
    }

    #[test]
    fn interleaves_streams_in_time_order_and_waits_for_the_slowest() {
        let mut m = Merger::new(Recorded::default(), config(0, 1000));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        let b = m.add_stream(ProcessInfo::default()).unwrap();
        for item in [ev(10), ev(30), clock(30)] {
            m.push(a, item).unwrap();
        }
        assert_eq!(m.buffered(), 2, "b has said nothing yet: hold a's events");
        for item in [ev(20), clock(25)] {
            m.push(b, item).unwrap();
        }
        let (sink, stats) = m.finish().unwrap();
        let order: Vec<u64> = sink.events.iter().map(|e| e.1).collect();
        assert_eq!(order, vec![10, 20, 30]);
        assert_eq!(stats.iter().map(|s| s.late).sum::<u64>(), 0);
        assert!(sink.log.contains(&"end 0 true".to_string()));
    }

    #[test]
    fn events_behind_the_window_are_written_and_counted_late() {
        let mut m = Merger::new(Recorded::default(), config(5, 1000));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        let other_thread = StreamItem::Event(Event {
            ts_ns: 50,
            tid: 2,
            kind: Kind::Call,
            function: FunctionId(0),
            line: 0,
            mark: None,
            text: None,
        });
        for item in [ev(100), clock(200), other_thread] {
            m.push(a, item).unwrap();
        }
        m.end_stream(a, StreamEnd::default(), None).unwrap();
        let (sink, stats) = m.finish().unwrap();
        assert_eq!(sink.events.len(), 2);
        assert_eq!(stats[0].late, 1);
        assert_eq!(stats[0].end.unwrap().last_ts_ns, 100);
    }

    #[test]
    fn a_promise_releases_a_streams_events_without_the_window() {
        let mut m = Merger::new(Recorded::default(), config(1000, 1000));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        let b = m.add_stream(ProcessInfo::default()).unwrap();
        for item in [ev(100), ev(200), clock(300)] {
            m.push(a, item).unwrap();
        }
        m.push(b, promise(300, 250)).unwrap();
        assert_eq!(m.buffered(), 2, "a made no promise: its window holds");
        m.push(a, promise(400, 250)).unwrap();
        assert_eq!(m.buffered(), 0, "both promised everything before 250");
        m.push(b, ev(260)).unwrap();
        m.push(a, promise(500, 150)).unwrap();
        assert_eq!(m.buffered(), 1, "a promise never moves a stream back");
        let (sink, stats) = m.finish().unwrap();
        assert_eq!(sink.events, vec![(0, 100), (0, 200), (1, 260)]);
        assert_eq!(stats.iter().map(|s| s.late).sum::<u64>(), 0);
    }

    #[test]
    fn a_live_merge_writes_nothing_newer_than_its_clock() {
        let mut m = Merger::new(Recorded::default(), config(100, 1000));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        m.advance(1000).unwrap();
        for item in [ev(950), ev(1100), promise(2000, 2000)] {
            m.push(a, item).unwrap();
        }
        assert_eq!(m.buffered(), 1, "newer than the collector's clock: held");
        // A process that connects now sends only newer events (the
        // collector welcomes it after registering it): nothing is late.
        let b = m.add_stream(ProcessInfo::default()).unwrap();
        m.push(b, ev(1050)).unwrap();
        m.advance(1200).unwrap();
        assert_eq!(m.buffered(), 2, "b has made no promise yet");
        m.end_stream(b, StreamEnd::default(), None).unwrap();
        assert_eq!(m.buffered(), 0);
        let (sink, stats) = m.finish().unwrap();
        assert_eq!(sink.events, vec![(0, 950), (1, 1050), (0, 1100)]);
        assert_eq!(stats.iter().map(|s| s.late).sum::<u64>(), 0);
    }

    #[test]
    fn a_late_event_keeps_its_thread_order() {
        let mut m = Merger::new(Recorded::default(), config(0, 1000));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        let on = |tid, ts_ns| {
            StreamItem::Event(Event {
                ts_ns,
                tid,
                kind: Kind::Call,
                function: FunctionId(0),
                line: 0,
                mark: None,
                text: None,
            })
        };
        for item in [on(1, 10), on(1, 30), clock(20), on(2, 5), on(1, 40)] {
            m.push(a, item).unwrap();
        }
        let (sink, stats) = m.finish().unwrap();
        let order: Vec<u64> = sink.events.iter().map(|e| e.1).collect();
        assert_eq!(order, vec![10, 5, 30, 40]);
        assert_eq!(stats[0].late, 1);
    }

    #[test]
    fn an_event_older_than_its_threads_previous_one_is_clamped_and_counted() {
        let mut m = Merger::new(Recorded::default(), config(0, 1000));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        for item in [ev(10), ev(30), ev(20), ev(40)] {
            m.push(a, item).unwrap();
        }
        let (sink, stats) = m.finish().unwrap();
        let order: Vec<u64> = sink.events.iter().map(|e| e.1).collect();
        assert_eq!(order, vec![10, 30, 30, 40]);
        assert_eq!(stats[0].clamped, 1);
    }

    #[test]
    fn heads_come_out_smallest_first_with_the_second_at_hand() {
        let mut heads = Heads::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut model: Vec<Head> = Vec::new();
        for step in 0..5000usize {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if model.len() < 40 && (rng % 3 != 0 || model.is_empty()) {
                let head = Head {
                    ts_ns: rng % 100,
                    queue: step,
                };
                heads.push(head);
                model.push(head);
            } else {
                model.sort();
                assert_eq!(heads.top(), Some(model[0]));
                let second = model.get(1).map_or(u64::MAX, |h| h.ts_ns);
                assert_eq!(heads.second_ts_ns(), second);
                let replace = (rng % 2 == 0).then_some(Head {
                    ts_ns: rng % 150,
                    queue: step,
                });
                model.remove(0);
                model.extend(replace);
                heads.replace_top(replace);
            }
        }
    }

    #[test]
    fn memory_is_bounded_by_max_buffered() {
        let mut m = Merger::new(Recorded::default(), config(0, 10));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        let _idle = m.add_stream(ProcessInfo::default()).unwrap();
        for t in 0..1000 {
            m.push(a, ev(t)).unwrap();
            assert!(m.buffered() <= 10);
        }
        let (sink, _) = m.finish().unwrap();
        assert_eq!(sink.events.len(), 1000);
        assert!(sink.events.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn intern_records_pass_before_the_events_that_use_them() {
        let mut m = Merger::new(Recorded::default(), config(0, 100));
        let a = m.add_stream(ProcessInfo::default()).unwrap();
        let f = FunctionInfo {
            id: FunctionId(0),
            name: "f".into(),
            module: String::new(),
            file: String::new(),
            line: 0,
            native: false,
        };
        m.push(a, StreamItem::Function(f)).unwrap();
        m.push(a, ev(5)).unwrap();
        m.end_stream(a, StreamEnd::default(), None).unwrap();
        let (sink, _) = m.finish().unwrap();
        assert_eq!(sink.log[1], "function 0 f");
        assert_eq!(sink.log[2], "end 0 false");
        assert_eq!(sink.events, vec![(0, 5)]);
    }
}
