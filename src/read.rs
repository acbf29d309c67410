//! Reading streams back: frames from a file, then events with their ticks
//! converted to CLOCK_MONOTONIC nanoseconds. A torn last frame (the writer
//! was killed mid-write) ends the stream as truncated instead of failing.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use crate::clock::{ClockJump, ClockMap, JumpKind};
use crate::clocksync::SyncSample;
use crate::event::{decode_code, FunctionId, Kind};
use crate::mark::Mark;
use crate::wire::{self, pb, Body};
use crate::writer::FunctionInfo;
use crate::{Error, Result};

/// An input that has read ahead of its reader and can show those bytes
/// without blocking (`BufReader::buffer`): how a reader learns which
/// frames have arrived already.
pub trait ReadAhead {
    /// The bytes read from the source and not taken yet.
    fn read_ahead(&self) -> &[u8];
}

impl<R> ReadAhead for BufReader<R> {
    fn read_ahead(&self) -> &[u8] {
        self.buffer()
    }
}

/// Reads the frames of one stream.
pub struct FrameReader<R> {
    inner: R,
    what: String,
    offset: u64,
    truncated: bool,
    done: bool,
    /// The current frame is `buf[..frame_len]`. The rest was zeroed once
    /// and is reused: refilling the buffer for each frame without zeroing
    /// it again saves a `memset` of every frame's bytes.
    buf: Vec<u8>,
    frame_len: usize,
    max_frame_bytes: u64,
}

/// A failed read of `what`. One that timed out is the peer's silence, said
/// as such: the reader's source (a collector's socket) words its deadline
/// in the error ("sent no complete hello within 1 s").
fn read_error(what: &str, action: &'static str, error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::TimedOut {
            what: what.to_owned(),
            why: error.to_string(),
        },
        _ => Error::Io { action, error },
    }
}

impl FrameReader<BufReader<File>> {
    /// Opens a stream file and checks its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            error: source,
        })?;
        let mut input = BufReader::new(file);
        let what = path.display().to_string();
        // A file may be a timeline given by mistake; on a connection the
        // same first byte (a newline) is just garbage, so only files say so.
        if let Ok([crate::input::TIMELINE_FIRST_BYTE, ..]) = input.fill_buf() {
            return Err(Error::Timeline { what });
        }
        // An empty file is a file "with nothing written to it yet", not a
        // connection that sent nothing.
        FrameReader::with_header(input, what).map_err(|e| match e {
            Error::Nothing { what } => Error::Empty { what },
            e => e,
        })
    }
}

impl<R: Read> FrameReader<R> {
    /// Reads and checks the file header from `inner`; `what` names the
    /// input in errors.
    pub fn with_header(mut inner: R, what: String) -> Result<Self> {
        let mut header = [0u8; wire::HEADER_LEN];
        let got = read_full(&mut inner, &mut header)
            .map_err(|error| read_error(&what, "reading the stream header", error))?;
        if got == 0 {
            return Err(Error::Nothing { what });
        }
        if got < wire::HEADER_LEN || &header[..6] != wire::MAGIC {
            return Err(Error::BadMagic { what });
        }
        let version = u16::from_le_bytes([header[6], header[7]]);
        if version > wire::FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what,
                found: u32::from(version),
                supported: u32::from(wire::FORMAT_VERSION),
            });
        }
        Ok(FrameReader {
            inner,
            what,
            offset: wire::HEADER_LEN as u64,
            truncated: false,
            done: false,
            buf: Vec::new(),
            frame_len: 0,
            max_frame_bytes: wire::MAX_FRAME_BYTES,
        })
    }

    /// Lowers (or restores) the largest frame accepted, e.g. for the
    /// frames a collector reads before a peer has proven who it is.
    pub fn set_max_frame_bytes(&mut self, limit: u64) {
        self.max_frame_bytes = limit.min(wire::MAX_FRAME_BYTES);
    }

    /// True once the input ended inside a frame.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Names the input.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The next frame, or `None` at the end of the input. Frames of a
    /// type this version does not know (a newer writer's) are skipped.
    pub fn next_frame(&mut self) -> Result<Option<Body>> {
        loop {
            let Some(start) = self.read_frame()? else {
                return Ok(None);
            };
            if let Some(body) = self.decode(start)? {
                return Ok(Some(body));
            }
        }
    }

    /// Bytes of the input read so far, the header included: how far an
    /// offline merge has come through a file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Decodes the frame in `buf`; `None` for a frame of a type this
    /// version does not know (a newer writer's), to be skipped.
    fn decode(&mut self, start: u64) -> Result<Option<Body>> {
        match wire::decode_frame(self.frame()) {
            Ok(body) => Ok(body),
            Err(reason) => {
                self.done = true;
                Err(self.malformed(start, reason))
            }
        }
    }

    /// Reads the next frame's bytes into `buf`; returns the frame's offset,
    /// or `None` at the end of the input (or a torn frame).
    fn read_frame(&mut self) -> Result<Option<u64>> {
        if self.done {
            return Ok(None);
        }
        let start = self.offset;
        let Some(len) = self.read_length()? else {
            self.done = true;
            return Ok(None);
        };
        if len > self.max_frame_bytes {
            self.done = true;
            return Err(Error::FrameTooLarge {
                what: self.what.clone(),
                offset: start,
                len,
                limit: self.max_frame_bytes,
            });
        }
        // Grown as bytes arrive, not to the announced length: a peer that
        // announces a large frame and sends little costs little.
        self.frame_len = 0;
        let got = read_up_to(&mut self.inner, &mut self.buf, len).map_err(|e| self.io_error(e))?;
        self.frame_len = got;
        self.offset += got as u64;
        if (got as u64) < len {
            self.end_truncated();
            return Ok(None);
        }
        Ok(Some(start))
    }

    /// The bytes of the frame last read.
    fn frame(&self) -> &[u8] {
        &self.buf[..self.frame_len]
    }

    /// Reads a varint length; `None` at a clean end or a torn prefix.
    fn read_length(&mut self) -> Result<Option<u64>> {
        let mut value = 0u64;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            let got = read_full(&mut self.inner, &mut byte).map_err(|e| self.io_error(e))?;
            if got == 0 {
                if i > 0 {
                    self.end_truncated();
                }
                return Ok(None);
            }
            self.offset += 1;
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                return Ok(Some(value));
            }
        }
        self.done = true;
        Err(self.malformed(self.offset, "frame length is not a valid varint".into()))
    }

    fn end_truncated(&mut self) {
        self.truncated = true;
        self.done = true;
    }

    fn io_error(&self, source: io::Error) -> Error {
        read_error(&self.what, "reading a stream", source)
    }

    fn malformed(&self, offset: u64, reason: String) -> Error {
        malformed(&self.what, offset, reason)
    }
}

impl<R: ReadAhead> FrameReader<R> {
    /// True when the whole next frame (its length and its bytes) has been
    /// read ahead already: reading it will not wait for the source.
    pub fn frame_read_ahead(&self) -> bool {
        if self.done {
            return false;
        }
        let ahead = self.inner.read_ahead();
        // A length beyond the limit, or malformed: `read_frame` reports it.
        wire::batch::varint(ahead).is_some_and(|(len, header)| {
            len <= self.max_frame_bytes && header as u64 + len <= ahead.len() as u64
        })
    }
}

fn malformed(what: &str, offset: u64, reason: String) -> Error {
    Error::Malformed {
        what: what.to_owned(),
        offset,
        reason,
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A peer that dies with bytes it never read (a collector's
            // clock replies) makes the kernel reset the connection once
            // everything it sent has been read: for the reader, that is
            // the peer going away, an end like any other.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Refuses a hello that speaks a protocol version this rtrace cannot read,
/// or none at all.
fn check_protocol(what: &str, hello: &pb::Hello) -> Result<()> {
    let supported = u32::from(wire::FORMAT_VERSION);
    match hello.protocol_version {
        0 => Err(Error::Malformed {
            what: what.to_owned(),
            offset: wire::HEADER_LEN as u64,
            reason: "the hello names no protocol version".into(),
        }),
        found if found > supported => Err(Error::UnsupportedVersion {
            what: what.to_owned(),
            found,
            supported,
        }),
        _ => Ok(()),
    }
}

/// Reads up to `len` bytes into the start of `buf`, growing it (never
/// shrinking it) as bytes arrive; returns the bytes read (fewer at the end
/// of the input). `len` is at most `MAX_FRAME_BYTES`, so it fits a `usize`.
fn read_up_to(input: &mut impl Read, buf: &mut Vec<u8>, len: u64) -> io::Result<usize> {
    const STEP: usize = 64 << 10;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut filled = 0;
    while filled < len {
        let want = (len - filled).min(STEP.max(filled));
        let end = filled + want;
        if buf.len() < end {
            buf.resize(end, 0);
        }
        let got = read_full(input, &mut buf[filled..end])?;
        filled += got;
        if got < want {
            break;
        }
    }
    Ok(filled)
}

/// One event read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds of the writer's host.
    pub ts_ns: u64,
    /// OS thread id.
    pub tid: u64,
    pub kind: Kind,
    pub function: FunctionId,
    /// Line number for `Kind::Line`, else 0.
    pub line: u32,
    /// For user events with a payload (`Kind::has_payload`): flow id,
    /// counter value, arguments.
    pub mark: Option<Box<Mark>>,
    /// `log_args`: on a call, the reprs of its arguments; on a return, the
    /// repr of the returned value.
    pub text: Option<Arc<str>>,
}

/// One thing read from a stream, in stream order: intern records before the
/// events that use them, a clock snapshot's time before the events it
/// covers.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Function(FunctionInfo),
    Thread {
        tid: u64,
        name: String,
    },
    /// A clock snapshot: no event written later in this stream is newer
    /// than `monotonic_ns`. Snapshots double as the stream's heartbeat.
    Clock {
        monotonic_ns: u64,
        /// The recorder's promise: no event older than this comes later
        /// in the stream (see `ClockSnapshot.complete_ticks`).
        complete_ns: Option<u64>,
    },
    Event(Event),
    /// The stream's clock jumped (see `ClockMap`); read from snapshots, or
    /// from a thread's counter going backwards within a batch.
    ClockJump(ClockJump),
    /// Live connections only: the recorder asks for a clock pong now.
    Ping {
        id: u64,
        sent_ns: u64,
    },
    /// A clock exchange the recorder reports (see `clocksync`).
    Sync(SyncSample),
    /// The collector's estimate of the stream's clock changed. Never read
    /// from a stream: the collector adds it before merging.
    Offset(crate::timeline::ClockOffset),
    /// This many events of the stream were moved forward to their thread's
    /// previous event's time before they reached the merge (see
    /// `merge::ThreadOrder`). Never read from a stream.
    Clamped(u64),
}

/// A piece of a stream as `EventReader::next_chunk` gives it: an item that
/// is not an event, or the events of one batch (one thread's, in the
/// thread's order), which travel and merge as one piece instead of one
/// item each.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Item(StreamItem),
    Events {
        tid: u64,
        events: Vec<Event>,
    },
    /// A batch of one thread's events that carry nothing but a time, a
    /// function and a kind, in columns: what almost every batch is.
    Plain {
        tid: u64,
        plain: Plain,
    },
    /// A batch already encoded for the output by the sink's encoder (see
    /// `timeline::StreamEncoder`): what the merge needs of its events.
    Encoded {
        tid: u64,
        encoded: Encoded,
    },
}

/// A batch of one thread's events as a sink's `timeline::StreamEncoder`
/// made them: their bytes in the output, and their timestamps to merge by.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Encoded {
    /// The events' timestamps, in order.
    pub ts_ns: Vec<u64>,
    /// The events' bytes, in order.
    pub bytes: Vec<u8>,
    /// Where each event's bytes end in `bytes`.
    pub ends: Vec<u32>,
}

/// One thread's events of one batch that have no line number, user-event
/// payload or `log_args` text (calls, returns, exceptions, span ends), as
/// columns. Read this way, an event costs 12 bytes to write, read back and
/// hand on, with nothing to drop, instead of an `Event`'s 56 with two
/// optional pointers: that was half the reader's work, and most batches
/// are like this.
///
/// The two columns always have the same length: they are only filled
/// together (`push`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plain {
    ts_ns: Vec<u64>,
    codes: Vec<(FunctionId, Kind)>,
}

impl Plain {
    /// Room for `n` events.
    pub fn with_capacity(n: usize) -> Plain {
        Plain {
            ts_ns: Vec::with_capacity(n),
            codes: Vec::with_capacity(n),
        }
    }

    /// Appends an event of `function` and `kind` at `ts_ns` (an event kind
    /// without a payload: one with a line or a mark reads back without it).
    #[inline]
    pub fn push(&mut self, ts_ns: u64, function: FunctionId, kind: Kind) {
        self.ts_ns.push(ts_ns);
        self.codes.push((function, kind));
    }

    /// The events' `Event::ts_ns`, in order.
    pub fn ts_ns(&self) -> &[u64] {
        &self.ts_ns
    }

    /// The times, to change in place (the clock stage, the thread order).
    pub fn ts_ns_mut(&mut self) -> &mut [u64] {
        &mut self.ts_ns
    }

    /// The events' functions and kinds, in order.
    pub fn codes(&self) -> &[(FunctionId, Kind)] {
        &self.codes
    }

    /// The times column, without copying it.
    pub fn into_ts_ns(self) -> Vec<u64> {
        self.ts_ns
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ts_ns.len()
    }

    /// True when there is no event.
    pub fn is_empty(&self) -> bool {
        self.ts_ns.is_empty()
    }

    /// Event `i`, of thread `tid`.
    pub fn event(&self, tid: u64, i: usize) -> Event {
        let (function, kind) = self.codes[i];
        Event {
            ts_ns: self.ts_ns[i],
            tid,
            kind,
            function,
            line: 0,
            mark: None,
            text: None,
        }
    }

    /// The events, of thread `tid`.
    pub fn into_events(self, tid: u64) -> Vec<Event> {
        (0..self.len()).map(|i| self.event(tid, i)).collect()
    }
}

impl Encoded {
    /// The bytes of events `from..to`.
    pub fn range(&self, from: usize, to: usize) -> &[u8] {
        let start = from.checked_sub(1).map_or(0, |i| self.ends[i] as usize);
        let end = to.checked_sub(1).map_or(0, |i| self.ends[i] as usize);
        &self.bytes[start..end]
    }
}

impl Chunk {
    /// The chunk as items, in order (none for an encoded batch, whose
    /// events are gone).
    pub fn into_items(self) -> impl Iterator<Item = StreamItem> {
        let (item, events) = match self {
            Chunk::Item(item) => (Some(item), Vec::new()),
            Chunk::Events { events, .. } => (None, events),
            Chunk::Plain { tid, plain } => (None, plain.into_events(tid)),
            Chunk::Encoded { .. } => (None, Vec::new()),
        };
        item.into_iter()
            .chain(events.into_iter().map(StreamItem::Event))
    }
}

/// Reads the events of one stream, resolving clocks as it goes.
pub struct EventReader<R> {
    frames: FrameReader<R>,
    hello: Option<pb::Hello>,
    functions: HashMap<u32, FunctionInfo>,
    threads: HashMap<u64, String>,
    clock: ClockMap,
    ready: VecDeque<Chunk>,
    /// The rest of a batch that `next_item` hands out one event at a time.
    pending: std::vec::IntoIter<Event>,
    pending_tid: u64,
    end: Option<pb::End>,
    /// Read nothing past the end marker (see `stop_at_end`).
    stop_at_end: bool,
    lost: u64,
}

impl EventReader<BufReader<File>> {
    /// Opens a stream file.
    pub fn open(path: &Path) -> Result<Self> {
        EventReader::new(FrameReader::open(path)?)
    }
}

impl<R: Read + ReadAhead> EventReader<R> {
    /// True when `next_chunk` has a chunk to give without waiting for the
    /// input: one decoded already, or a whole frame read ahead.
    pub fn chunk_ready(&self) -> bool {
        !self.ready.is_empty() || self.pending.len() > 0 || self.frames.frame_read_ahead()
    }
}

impl<R: Read> EventReader<R> {
    /// Reads events from `frames`; the hello must come first.
    pub fn new(mut frames: FrameReader<R>) -> Result<Self> {
        match frames.next_frame()? {
            Some(Body::Hello(hello)) => EventReader::with_hello(frames, hello),
            None if frames.truncated() || frames.done => Ok(EventReader::without_hello(frames)),
            _ => Err(Error::Malformed {
                what: frames.what.clone(),
                offset: wire::HEADER_LEN as u64,
                reason: "the first frame is not a hello".into(),
            }),
        }
    }

    /// Reads the rest of a stream whose hello the caller has read itself
    /// (a collector, which looks at the frames before it). Refuses a hello
    /// of a protocol version newer than this rtrace reads.
    pub fn with_hello(frames: FrameReader<R>, hello: pb::Hello) -> Result<Self> {
        check_protocol(&frames.what, &hello)?;
        let rate = hello.clock.as_ref().map_or(1e9, |c| c.ticks_per_second);
        let mut reader = EventReader::without_hello(frames);
        reader.clock = ClockMap::new(rate);
        reader.hello = Some(hello);
        Ok(reader)
    }

    fn without_hello(frames: FrameReader<R>) -> Self {
        EventReader {
            frames,
            hello: None,
            functions: HashMap::new(),
            threads: HashMap::new(),
            clock: ClockMap::new(1e9),
            ready: VecDeque::new(),
            pending: Vec::new().into_iter(),
            pending_tid: 0,
            end: None,
            stop_at_end: false,
            lost: 0,
        }
    }

    /// From now on the stream ends at its end marker: `next_chunk` and
    /// `next_item` give what came before it, then `None`, without reading
    /// on. For a live connection, whose recorder sends nothing after the
    /// marker and waits for the collector to close: reading on would wait
    /// for the recorder's own close first.
    pub fn stop_at_end(&mut self) {
        self.stop_at_end = true;
    }

    /// The frames not read yet (a relay forwards them as they are); what
    /// was decoded already and not taken is dropped.
    pub fn into_frames(self) -> FrameReader<R> {
        self.frames
    }

    /// Bytes of the input read so far (see `FrameReader::offset`).
    pub fn bytes_read(&self) -> u64 {
        self.frames.offset()
    }

    /// The stream's hello (`None` only for a stream torn before it).
    pub fn hello(&self) -> Option<&pb::Hello> {
        self.hello.as_ref()
    }

    /// A function interned so far.
    pub fn function(&self, id: FunctionId) -> Option<&FunctionInfo> {
        self.functions.get(&id.0)
    }

    /// Thread names sent so far.
    pub fn thread_names(&self) -> impl Iterator<Item = (u64, &str)> {
        self.threads.iter().map(|(&tid, name)| (tid, name.as_str()))
    }

    /// A thread's name, if it was sent.
    pub fn thread_name(&self, tid: u64) -> Option<&str> {
        self.threads.get(&tid).map(String::as_str)
    }

    /// True when the stream ended without its end marker (read to the end
    /// first).
    pub fn truncated(&self) -> bool {
        self.frames.done && self.end.is_none()
    }

    /// The end marker, once read.
    pub fn end(&self) -> Option<&pb::End> {
        self.end.as_ref()
    }

    /// Events reported lost so far.
    pub fn lost(&self) -> u64 {
        self.end
            .as_ref()
            .map_or(self.lost, |e| e.lost.max(self.lost))
    }

    /// The next event.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        while let Some(item) = self.next_item()? {
            if let StreamItem::Event(event) = item {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// Moves the items already decoded (the rest of the current frame) to
    /// `out`, so a caller can hand them on in one piece.
    pub fn take_ready(&mut self, out: &mut Vec<StreamItem>) {
        out.extend(self.pending.by_ref().map(StreamItem::Event));
        for chunk in self.ready.drain(..) {
            out.extend(chunk.into_items());
        }
    }

    /// Moves the chunks already decoded (the rest of the current frame) to
    /// `out`.
    pub fn take_ready_chunks(&mut self, out: &mut Vec<Chunk>) {
        if self.pending.len() > 0 {
            let events = self.pending.by_ref().collect();
            let tid = self.pending_tid;
            out.push(Chunk::Events { tid, events });
        }
        out.extend(self.ready.drain(..));
    }

    /// The next item: an intern record, a clock heartbeat or an event.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>> {
        loop {
            if let Some(event) = self.pending.next() {
                return Ok(Some(StreamItem::Event(event)));
            }
            match self.next_chunk()? {
                None => return Ok(None),
                Some(Chunk::Item(item)) => return Ok(Some(item)),
                Some(Chunk::Encoded { .. }) => {} // never read from a stream
                Some(Chunk::Events { tid, events }) => {
                    self.pending_tid = tid;
                    self.pending = events.into_iter();
                }
                Some(Chunk::Plain { tid, plain }) => {
                    self.pending_tid = tid;
                    self.pending = plain.into_events(tid).into_iter();
                }
            }
        }
    }

    /// The next chunk: an intern record, a clock heartbeat, or a batch of
    /// one thread's events. The fast way to read a stream.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.pending.len() > 0 {
            let events = self.pending.by_ref().collect();
            let tid = self.pending_tid;
            return Ok(Some(Chunk::Events { tid, events }));
        }
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Ok(Some(chunk));
            }
            if self.stop_at_end && self.end.is_some() {
                return Ok(None);
            }
            if !self.read_frame()? {
                return Ok(None);
            }
        }
    }

    /// Reads one frame into `ready`; false at the end of the stream.
    fn read_frame(&mut self) -> Result<bool> {
        let Some(start) = self.frames.read_frame()? else {
            return Ok(false);
        };
        match wire::batch::parse_frame(self.frames.frame()) {
            Some(view) => {
                let batch = Batch {
                    tid: view.tid,
                    base_ticks: view.base_ticks,
                    lost_before: view.lost_before,
                    len: (view.tick_deltas.len(), view.codes.len()),
                    deltas: view.tick_deltas.iter().map(wire::batch::unzigzag),
                    codes: view.codes.iter(),
                    plain: view.lines.is_empty() && view.marks.is_empty(),
                    lines: view.lines.iter().map(|line| line as u32),
                    marks: view.marks.into_iter(),
                    palette: view.palette.iter().collect(),
                    texts: Vec::new(),
                };
                let decoded = decode_batch(batch, &self.clock, &mut self.lost, &mut self.ready);
                decoded.map_err(|reason| self.malformed(reason))?;
            }
            None => {
                if let Some(body) = self.frames.decode(start)? {
                    self.apply(body)?;
                }
            }
        }
        Ok(true)
    }

    fn apply(&mut self, body: Body) -> Result<()> {
        match body {
            Body::Hello(_) => return Err(self.malformed("a second hello in one stream")),
            Body::Function(f) => {
                let info = FunctionInfo {
                    id: FunctionId(f.id),
                    name: f.name,
                    module: f.module,
                    file: f.file,
                    line: f.line,
                    native: f.native,
                };
                self.functions.insert(f.id, info.clone());
                self.ready
                    .push_back(Chunk::Item(StreamItem::Function(info)));
            }
            Body::Thread(t) => {
                self.threads.insert(t.tid, t.name.clone());
                self.ready.push_back(Chunk::Item(StreamItem::Thread {
                    tid: t.tid,
                    name: t.name,
                }));
            }
            Body::Clock(c) => {
                if let Some(jump) = self.clock.add(c.ticks, c.monotonic_ns) {
                    self.ready
                        .push_back(Chunk::Item(StreamItem::ClockJump(jump)));
                }
                let complete_ns = match c.complete_ticks {
                    0 => None,
                    ticks => self.clock.to_ns(ticks),
                };
                self.ready.push_back(Chunk::Item(StreamItem::Clock {
                    monotonic_ns: c.monotonic_ns.saturating_add(self.clock.shift_ns()),
                    complete_ns,
                }));
            }
            Body::Batch(batch) => {
                if batch.text_events.len() != batch.texts.len() {
                    return Err(
                        self.malformed("a batch has different numbers of texts and text events")
                    );
                }
                let texts: Vec<_> = batch.text_events.into_iter().zip(batch.texts).collect();
                let batch = Batch {
                    plain: batch.lines.is_empty() && batch.marks.is_empty() && texts.is_empty(),
                    tid: batch.tid,
                    base_ticks: batch.base_ticks,
                    lost_before: batch.lost_before,
                    len: (batch.tick_deltas.len(), batch.codes.len()),
                    deltas: batch.tick_deltas.into_iter(),
                    codes: batch.codes.into_iter(),
                    lines: batch.lines.into_iter(),
                    marks: batch.marks.into_iter(),
                    palette: batch.palette,
                    texts,
                };
                let decoded = decode_batch(batch, &self.clock, &mut self.lost, &mut self.ready);
                decoded.map_err(|reason| self.malformed(reason))?;
            }
            Body::End(end) => self.end = Some(end),
            Body::ClockPing(ping) => self.ready.push_back(Chunk::Item(StreamItem::Ping {
                id: ping.id,
                sent_ns: ping.sent_ns,
            })),
            Body::ClockSync(sync) => self
                .ready
                .push_back(Chunk::Item(StreamItem::Sync((&sync).into()))),
            // The collector's direction; nothing a stream should carry.
            Body::ClockPong(_) | Body::CollectorHello(_) => {}
            Body::Auth(_) => return Err(self.malformed("an auth frame after the hello")),
        }
        Ok(())
    }

    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::Malformed {
            what: self.frames.what.clone(),
            offset: self.frames.offset,
            reason: reason.into(),
        }
    }
}

/// Decodes a batch into one chunk of events in `ready`, adding its losses
/// to `lost`. On bad input the events before the bad one are still handed
/// out, then the error.
fn decode_batch<D, C, L, M>(
    batch: Batch<D, C, L, M>,
    clock: &ClockMap,
    lost: &mut u64,
    ready: &mut VecDeque<Chunk>,
) -> std::result::Result<(), String>
where
    D: Iterator<Item = i64>,
    C: Iterator<Item = u64>,
    L: Iterator<Item = u32>,
    M: Iterator<Item = pb::Mark>,
{
    if batch.len.0 != batch.len.1 {
        return Err("a batch has different numbers of ticks and codes".into());
    }
    if clock.is_empty() && batch.len.1 > 0 {
        return Err("a batch comes before any clock snapshot".into());
    }
    *lost += batch.lost_before;
    let tid = batch.tid;
    let mut backwards = None;
    let result = if batch.plain {
        let mut plain = Plain::with_capacity(batch.len.1);
        let result = batch.decode_plain(clock, &mut plain, &mut backwards);
        if !plain.is_empty() {
            ready.push_back(Chunk::Plain { tid, plain });
        }
        result
    } else {
        let mut events = Vec::with_capacity(batch.len.1);
        let result = batch.decode(clock, &mut events, &mut backwards);
        if !events.is_empty() {
            ready.push_back(Chunk::Events { tid, events });
        }
        result
    };
    if let Some((ticks, delta)) = backwards {
        // Reported after the batch: the merge keeps the thread's order.
        ready.push_back(Chunk::Item(StreamItem::ClockJump(ClockJump {
            kind: JumpKind::CounterBackwards,
            at_ns: clock.to_ns(ticks).unwrap_or(0),
            size_ns: clock.ticks_to_ns(delta),
        })));
    }
    result
}

/// The kind of each wire value (`decode_code`'s, below 16) that a plain
/// batch may hold: a call or return of any sort, or a span end (a mark
/// without payload). One load per event instead of a match and two tests.
const PLAIN_KINDS: [Option<Kind>; 1 << Kind::BITS] = {
    let mut kinds = [None; 1 << Kind::BITS];
    kinds[Kind::Call as usize] = Some(Kind::Call);
    kinds[Kind::Return as usize] = Some(Kind::Return);
    kinds[Kind::Exception as usize] = Some(Kind::Exception);
    kinds[Kind::CCall as usize] = Some(Kind::CCall);
    kinds[Kind::CReturn as usize] = Some(Kind::CReturn);
    kinds[Kind::SpanEnd as usize] = Some(Kind::SpanEnd);
    kinds
};

/// Why an event of wire kind `kind` cannot be in a plain batch (the
/// reasons `Batch::fill` gives for the same event).
#[cold]
fn not_plain(kind: u64) -> String {
    match Kind::from_wire(kind) {
        Some(Kind::Line) => "a line event without its line number".into(),
        Some(kind) if kind.has_payload() => "a user event without its mark".into(),
        _ => format!("unknown event kind {kind}"),
    }
}

/// The event code that a batch's `code` stands for: the code itself without
/// a palette, the palette's entry with one.
#[inline]
fn from_palette(palette: &[u64], code: u64) -> std::result::Result<u64, String> {
    if palette.is_empty() {
        return Ok(code);
    }
    match usize::try_from(code).ok().and_then(|i| palette.get(i)) {
        Some(&code) => Ok(code),
        None => Err(format!(
            "an event refers to entry {code} of a palette of {}",
            palette.len()
        )),
    }
}

/// A batch's fields, from the hand-parsed view or from prost's struct.
struct Batch<D, C, L, M> {
    tid: u64,
    base_ticks: u64,
    lost_before: u64,
    /// Numbers of tick deltas and of codes.
    len: (usize, usize),
    /// No line numbers, marks or texts: every good event is plain.
    plain: bool,
    deltas: D,
    codes: C,
    lines: L,
    marks: M,
    /// The codes that `codes` index (`EventBatch.palette`); empty: `codes`
    /// are the codes themselves.
    palette: Vec<u64>,
    /// `log_args` texts: (event index, text), by ascending index. A frame
    /// with texts always takes the prost path (`wire::batch`).
    texts: Vec<(u32, String)>,
}

impl<D, C, L, M> Batch<D, C, L, M>
where
    D: Iterator<Item = i64>,
    C: Iterator<Item = u64>,
    L: Iterator<Item = u32>,
    M: Iterator<Item = pb::Mark>,
{
    /// Appends the batch's events to `out`, their ticks converted by
    /// `clock`; stops at the first bad one. Notes in `backwards` the first
    /// event whose counter is behind its predecessor's (ticks, delta).
    ///
    /// The events are written field by field into slots already in `out`:
    /// an event built on the stack and pushed was copied with wide loads
    /// of narrower stores, which stalled (about half the decoding time).
    fn decode(
        self,
        clock: &ClockMap,
        out: &mut Vec<Event>,
        backwards: &mut Option<(u64, i64)>,
    ) -> std::result::Result<(), String> {
        let tid = self.tid;
        let start = out.len();
        out.resize_with(start + self.len.1, || Event {
            ts_ns: 0,
            tid,
            kind: Kind::Call,
            function: FunctionId(0),
            line: 0,
            mark: None,
            text: None,
        });
        let (decoded, result) = self.fill(clock, &mut out[start..], backwards);
        out.truncate(start + decoded);
        result
    }

    /// Appends the events of a plain batch to `plain`; stops at the first
    /// bad one (with the reasons `fill` gives) and notes in `backwards`
    /// as `decode` does.
    fn decode_plain(
        self,
        clock: &ClockMap,
        plain: &mut Plain,
        backwards: &mut Option<(u64, i64)>,
    ) -> std::result::Result<(), String> {
        let mut converter = clock.converter();
        let mut ticks = self.base_ticks;
        let palette = self.palette;
        for (delta, code) in self.deltas.zip(self.codes) {
            ticks = ticks.wrapping_add(delta as u64);
            if delta < 0 && backwards.is_none() {
                *backwards = Some((ticks, delta));
            }
            let (function, kind) = decode_code(from_palette(&palette, code)?);
            let Some(kind) = PLAIN_KINDS[kind as usize] else {
                return Err(not_plain(kind));
            };
            let ts_ns = converter.to_ns(ticks).unwrap_or(0);
            plain.push(ts_ns, FunctionId(function as u32), kind);
        }
        Ok(())
    }

    /// Decodes events into `slots` (as many as the batch has codes); returns
    /// how many it filled and, if it stopped early, why.
    fn fill(
        mut self,
        clock: &ClockMap,
        slots: &mut [Event],
        backwards: &mut Option<(u64, i64)>,
    ) -> (usize, std::result::Result<(), String>) {
        let mut converter = clock.converter();
        let mut ticks = self.base_ticks;
        let mut texts = self.texts.into_iter();
        let mut next_text = texts.next();
        // The index of the next event with a text (none: never reached),
        // so that an event without one costs a comparison.
        let text_at =
            |next: &Option<(u32, String)>| next.as_ref().map_or(usize::MAX, |t| t.0 as usize);
        let mut next_text_at = text_at(&next_text);
        let palette = self.palette;
        let pairs = self.deltas.zip(self.codes);
        // The slot being filled, and in the end how many were (counted, not
        // assumed: a slot left blank is never handed out).
        let mut filled = 0;
        for (slot, (delta, code)) in slots.iter_mut().zip(pairs) {
            ticks = ticks.wrapping_add(delta as u64);
            if delta < 0 && backwards.is_none() {
                *backwards = Some((ticks, delta));
            }
            let code = match from_palette(&palette, code) {
                Ok(code) => code,
                Err(reason) => return (filled, Err(reason)),
            };
            let (function, kind) = decode_code(code);
            let Some(kind) = Kind::from_wire(kind) else {
                return (filled, Err(format!("unknown event kind {kind}")));
            };
            if kind == Kind::Line {
                let Some(line) = self.lines.next() else {
                    return (filled, Err("a line event without its line number".into()));
                };
                slot.line = line;
            }
            if kind.has_payload() {
                let Some(mark) = self.marks.next() else {
                    return (filled, Err("a user event without its mark".into()));
                };
                slot.mark = Some(Box::new(wire::mark_from_wire(mark)));
            }
            if filled == next_text_at {
                let text = std::mem::replace(&mut next_text, texts.next());
                next_text_at = text_at(&next_text);
                slot.text = text.map(|(_, text)| Arc::from(text));
            }
            slot.ts_ns = converter.to_ns(ticks).unwrap_or(0);
            slot.kind = kind;
            slot.function = FunctionId(function as u32);
            filled += 1;
        }
        (filled, Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::encode_code;

    type Columns<'a> = Batch<
        std::iter::Copied<std::slice::Iter<'a, i64>>,
        std::iter::Copied<std::slice::Iter<'a, u64>>,
        std::iter::Empty<u32>,
        std::iter::Empty<pb::Mark>,
    >;

    fn batch<'a>(deltas: &'a [i64], codes: &'a [u64], plain: bool) -> Columns<'a> {
        Batch {
            tid: 9,
            base_ticks: 1_000,
            lost_before: 0,
            len: (deltas.len(), codes.len()),
            plain,
            deltas: deltas.iter().copied(),
            codes: codes.iter().copied(),
            lines: std::iter::empty(),
            marks: std::iter::empty(),
            palette: Vec::new(),
            texts: Vec::new(),
        }
    }

    /// A batch without lines, marks or texts read as columns gives the
    /// events, the error (after the same good events) and the backwards
    /// step that reading it as `Event`s gives.
    #[test]
    fn a_plain_batch_reads_as_its_events() {
        let mut clock = ClockMap::new(1e9);
        clock.add(1_000, 50_000);
        clock.add(3_000, 54_000);
        let code = |function, kind| encode_code(FunctionId(function), kind);
        let good = [
            code(1, Kind::Call),
            code(2, Kind::CCall),
            code(2, Kind::CReturn),
            code(300_000, Kind::Call),
            code(300_000, Kind::Exception),
            code(7, Kind::SpanEnd),
            code(1, Kind::Return),
        ];
        let bad = [
            (code(1, Kind::Line), "a line event without its line number"),
            (code(1, Kind::Counter), "a user event without its mark"),
            (15, "unknown event kind 15"),
        ];
        let mut cases = vec![(good.to_vec(), None)];
        for (code, error) in bad {
            let mut codes = good[..3].to_vec();
            codes.extend([code, good[0]]);
            cases.push((codes, Some(error.to_string())));
        }
        for (codes, error) in cases {
            // Crosses a snapshot, and steps back once.
            let deltas: Vec<i64> = (0..codes.len() as i64)
                .map(|i| if i == 4 { -30 } else { 700 })
                .collect();
            let (mut events, mut backwards) = (Vec::new(), None);
            let result = batch(&deltas, &codes, false).decode(&clock, &mut events, &mut backwards);
            let (mut plain, mut plain_backwards) = (Plain::default(), None);
            let plain_result =
                batch(&deltas, &codes, true).decode_plain(&clock, &mut plain, &mut plain_backwards);
            assert_eq!(plain_result, result);
            assert_eq!(plain_result.err(), error);
            assert_eq!(plain_backwards, backwards);
            assert!(!events.is_empty());
            assert_eq!(plain.into_events(9), events);
        }
    }

    /// Frames read one after another into the reused buffer come out
    /// exactly: a small frame after a large one holds none of its bytes,
    /// and a frame that ends early is torn, not padded.
    #[test]
    fn each_frame_reads_as_its_own_bytes() {
        let frames: Vec<Vec<u8>> = [200_000usize, 3, 0, 70_000, 1]
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let mut bytes = wire::file_header().to_vec();
        for frame in &frames {
            prost::encoding::encode_varint(frame.len() as u64, &mut bytes);
            bytes.extend_from_slice(frame);
        }
        prost::encoding::encode_varint(100, &mut bytes);
        bytes.extend_from_slice(&[7; 40]);
        let mut reader = FrameReader::with_header(&bytes[..], "t".into()).unwrap();
        for frame in &frames {
            assert!(reader.read_frame().unwrap().is_some());
            assert_eq!(reader.frame(), &frame[..]);
        }
        assert_eq!(reader.read_frame().unwrap(), None);
        assert!(reader.truncated());
    }

    /// A stream's header, hello (a nanosecond counter) and one clock
    /// snapshot: counter `ticks` at `monotonic_ns`.
    fn stream_head(ticks: u64, monotonic_ns: u64) -> Vec<u8> {
        let mut bytes = wire::file_header().to_vec();
        let hello = pb::Hello {
            protocol_version: u32::from(wire::FORMAT_VERSION),
            clock: Some(pb::ClockInfo {
                source: 2,
                ticks_per_second: 1e9,
            }),
            ..Default::default()
        };
        wire::encode_frame(Body::Hello(hello), &mut bytes);
        let snapshot = pb::ClockSnapshot {
            ticks,
            monotonic_ns,
            unix_ns: 0,
            complete_ticks: 0,
        };
        wire::encode_frame(Body::Clock(snapshot), &mut bytes);
        bytes
    }

    /// A stream's usual batches come out as `Chunk::Plain`, and read one
    /// event at a time as the same events.
    #[test]
    fn a_stream_of_calls_and_returns_reads_as_plain_chunks() {
        let mut bytes = stream_head(100, 5_000);
        let events: Vec<crate::RawEvent> = (0..6)
            .map(|i| {
                let kind = if i % 2 == 0 { Kind::Call } else { Kind::Return };
                crate::RawEvent::new(200 + i * 10, FunctionId(i as u32 / 2), kind, 0)
            })
            .collect();
        wire::encode_frame(wire::batch_body(4, &events, 0, Vec::new()), &mut bytes);
        let open = || FrameReader::with_header(&bytes[..], "t".into()).and_then(EventReader::new);

        let mut reader = open().unwrap();
        let mut plain = None;
        while let Some(chunk) = reader.next_chunk().unwrap() {
            if let Chunk::Plain { tid, plain: p } = chunk {
                plain = Some((tid, p));
            }
        }
        let (tid, plain) = plain.expect("the batch is a plain chunk");
        assert_eq!(tid, 4);
        assert_eq!(plain.ts_ns(), [5_100, 5_110, 5_120, 5_130, 5_140, 5_150]);

        let mut reader = open().unwrap();
        let mut one_by_one = Vec::new();
        while let Some(event) = reader.next_event().unwrap() {
            one_by_one.push(event);
        }
        assert_eq!(one_by_one, plain.into_events(4));
        assert_eq!(one_by_one[3].kind, Kind::Return);
        assert_eq!(one_by_one[3].function, FunctionId(1));
    }

    /// `chunk_ready` tells a frame that has been read ahead whole from one
    /// that has not (a torn one, or one the buffer could not hold yet),
    /// without reading.
    #[test]
    fn a_frame_read_ahead_whole_is_ready_and_a_part_of_one_is_not() {
        let mut bytes = stream_head(100, 5_000);
        let events: Vec<crate::RawEvent> = (0..200)
            .map(|i| crate::RawEvent::new(200 + i * 10, FunctionId(1), Kind::Call, 0))
            .collect();
        for tid in [1, 2] {
            wire::encode_frame(wire::batch_body(tid, &events, 0, Vec::new()), &mut bytes);
        }
        // Everything read ahead: each frame is ready until the last is read.
        let input = BufReader::with_capacity(1 << 16, &bytes[..]);
        let mut reader =
            EventReader::new(FrameReader::with_header(input, "t".into()).unwrap()).unwrap();
        let mut ready = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            ready.push((matches!(chunk, Chunk::Plain { .. }), reader.chunk_ready()));
        }
        // The clock snapshot, then the two batches: ready after each but the last.
        assert_eq!(ready, [(false, true), (true, true), (true, false)]);
        // A buffer smaller than a batch's frame holds only part of it.
        let input = BufReader::with_capacity(64, &bytes[..]);
        let mut reader =
            EventReader::new(FrameReader::with_header(input, "t".into()).unwrap()).unwrap();
        let first = reader.next_chunk().unwrap();
        assert!(
            matches!(first, Some(Chunk::Item(StreamItem::Clock { .. }))),
            "{first:?}"
        );
        assert!(
            !reader.chunk_ready(),
            "the next frame is not all in the buffer"
        );
        assert!(matches!(
            reader.next_chunk().unwrap(),
            Some(Chunk::Plain { .. })
        ));
    }

    /// A stream holding `batch` after a hello and a clock snapshot.
    fn stream_with(batch: pb::EventBatch) -> Vec<u8> {
        let mut bytes = stream_head(0, 0);
        wire::encode_frame(Body::Batch(batch), &mut bytes);
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Event>> {
        let mut reader = EventReader::new(FrameReader::with_header(bytes, "s".into())?)?;
        let mut events = Vec::new();
        while let Some(event) = reader.next_event()? {
            events.push(event);
        }
        Ok(events)
    }

    /// Codes given through a palette read as the same events as codes
    /// given as such, on every path (hand-parsed plain, hand-parsed with a
    /// line, prost's for a batch with a text); an index past the palette
    /// is an error that says so.
    #[test]
    fn a_palette_stands_for_the_codes_it_lists() {
        let call = encode_code(FunctionId(900), Kind::Call);
        let ret = encode_code(FunctionId(900), Kind::Return);
        let line = encode_code(FunctionId(900), Kind::Line);
        let with_text = vec![ret, call, ret, call];
        for codes in [
            vec![call, ret, call, ret],
            vec![call, line, ret, call],
            with_text.clone(),
        ] {
            let lines = if codes.contains(&line) {
                vec![12]
            } else {
                vec![]
            };
            let (texts, text_events) = if codes == with_text {
                (vec!["x=1".to_string()], vec![1])
            } else {
                (vec![], vec![])
            };
            let plain = pb::EventBatch {
                tid: 1,
                tick_deltas: vec![0, 5, 5, 5],
                codes: codes.clone(),
                lines,
                texts,
                text_events,
                ..Default::default()
            };
            let mut palette = plain.clone();
            palette.palette = vec![ret, call, line];
            palette.codes = codes
                .iter()
                .map(|c| palette.palette.iter().position(|p| p == c).unwrap() as u64)
                .collect();
            let expected = read_all(&stream_with(plain)).unwrap();
            assert_eq!(expected.len(), 4);
            let texts = expected.iter().filter(|e| e.text.is_some()).count();
            assert_eq!(texts, usize::from(codes == with_text));
            assert_eq!(read_all(&stream_with(palette.clone())).unwrap(), expected);

            palette.codes[2] = 3;
            let error = read_all(&stream_with(palette)).unwrap_err().to_string();
            assert!(error.starts_with("s: malformed frame at byte "), "{error}");
            assert!(
                error.ends_with("an event refers to entry 3 of a palette of 3"),
                "{error}"
            );
        }
    }
}
