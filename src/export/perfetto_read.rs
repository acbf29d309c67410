//! Reads the Perfetto files `PerfettoWriter` writes back into what the
//! merge fed it: processes, functions, thread names, events (with the
//! process they belong to) and how each stream ended. So a merged timeline
//! can be iterated like a stream file (`EventReader`).
//!
//! Only rtrace's own layout is understood (see `perfetto`); packets of any
//! other kind are skipped. A torn last packet (the writer was killed
//! mid-write) ends the file as truncated instead of failing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use prost::Message;

use crate::event::{FunctionId, Kind};
use crate::read::Event;
use crate::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use crate::writer::FunctionInfo;
use crate::{Error, Result};

use super::perfetto_format::{self as format, pb, ArgName, Category};
use pb::debug_annotation::{NameField as ArgNameField, Value};
use pb::track_event::{NameField, Type};

/// One event of a merged timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergedEvent {
    /// The process (stream) it happened in.
    pub stream: StreamId,
    pub event: Event,
}

/// What reading a merged file yields, in file order: each process, function
/// and thread name before the first event that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergedItem {
    /// A process joined (`MergedReader::process` describes it).
    Process(StreamId),
    /// A function of a process was first used.
    Function(StreamId, FunctionId),
    /// A thread was named (or renamed).
    Thread(StreamId, u64),
    Event(MergedEvent),
    /// A process's stream ended (`MergedReader::stream_end`).
    StreamEnd(StreamId),
}

/// Reads a merged Perfetto file written by `PerfettoWriter`.
pub struct MergedReader<R> {
    packets: PacketReader<R>,
    streams: BTreeMap<StreamId, StreamData>,
    tracks: HashMap<u64, Owner>,
    sequences: HashMap<u32, Sequence>,
    ready: VecDeque<MergedItem>,
}

impl MergedReader<BufReader<File>> {
    /// Opens a merged file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(MergedReader::new(
            BufReader::new(file),
            path.display().to_string(),
        ))
    }
}

impl<R: Read> MergedReader<R> {
    /// Reads packets from `input`; `what` names it in errors.
    pub fn new(input: R, what: String) -> Self {
        MergedReader {
            packets: PacketReader {
                inner: input,
                what,
                offset: 0,
                truncated: false,
                done: false,
                buf: Vec::new(),
            },
            streams: BTreeMap::new(),
            tracks: HashMap::new(),
            sequences: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// The processes seen so far.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, &ProcessInfo)> {
        self.streams.iter().map(|(&id, data)| (id, &data.info))
    }

    /// A process seen so far.
    pub fn process(&self, stream: StreamId) -> Option<&ProcessInfo> {
        self.streams.get(&stream).map(|data| &data.info)
    }

    /// A function of a process, once an event used it.
    pub fn function(&self, stream: StreamId, id: FunctionId) -> Option<&FunctionInfo> {
        self.streams.get(&stream)?.functions.get(&id.0)
    }

    /// A thread's name, once its track was described.
    pub fn thread_name(&self, stream: StreamId, tid: u64) -> Option<&str> {
        let data = self.streams.get(&stream)?;
        data.threads.get(&tid).map(String::as_str)
    }

    /// The named threads of a process seen so far.
    pub fn thread_names(&self, stream: StreamId) -> impl Iterator<Item = (u64, &str)> {
        self.streams
            .get(&stream)
            .into_iter()
            .flat_map(|data| data.threads.iter().map(|(&tid, n)| (tid, n.as_str())))
    }

    /// How a process's stream ended, once its end was read.
    pub fn stream_end(&self, stream: StreamId) -> Option<&StreamEnd> {
        self.streams.get(&stream)?.end.as_ref()
    }

    /// True once the file ended inside a packet.
    pub fn truncated(&self) -> bool {
        self.packets.truncated
    }

    /// The next event.
    pub fn next_event(&mut self) -> Result<Option<MergedEvent>> {
        while let Some(item) = self.next_item()? {
            if let MergedItem::Event(event) = item {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// The next item.
    pub fn next_item(&mut self) -> Result<Option<MergedItem>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(Some(item));
            }
            let Some((packet, offset)) = self.packets.next_packet()? else {
                return Ok(None);
            };
            self.apply(packet)
                .map_err(|reason| self.packets.malformed(offset, reason))?;
        }
    }

    fn apply(&mut self, packet: pb::TracePacket) -> Result<(), String> {
        let sequence_id = packet.trusted_packet_sequence_id.unwrap_or(0);
        let sequence = self.sequences.entry(sequence_id).or_default();
        if packet.sequence_flags.unwrap_or(0) & format::SEQ_INCREMENTAL_STATE_CLEARED != 0 {
            *sequence = Sequence::default();
        }
        if let Some(defaults) = &packet.trace_packet_defaults {
            sequence.default_clock = defaults.timestamp_clock_id;
            sequence.default_track = defaults
                .track_event_defaults
                .as_ref()
                .and_then(|d| d.track_uuid);
        }
        if let Some(interned) = packet.interned_data {
            sequence.intern(interned);
        }
        let ts_ns = sequence.timestamp(packet.timestamp, packet.timestamp_clock_id)?;
        match packet.data {
            Some(pb::trace_packet::Data::ClockSnapshot(snapshot)) => sequence.clocks(&snapshot),
            Some(pb::trace_packet::Data::TrackDescriptor(d)) => self.describe(sequence_id, d),
            Some(pb::trace_packet::Data::ProcessTree(tree)) => {
                self.process_tree(sequence_id, &tree)
            }
            Some(pb::trace_packet::Data::TrackEvent(e)) => {
                return self.track_event(sequence_id, ts_ns, &e)
            }
            None => {}
        }
        Ok(())
    }

    fn describe(&mut self, sequence_id: u32, descriptor: pb::TrackDescriptor) {
        let uuid = descriptor.uuid.unwrap_or(0);
        let parent = descriptor
            .parent_uuid
            .and_then(|p| self.tracks.get(&p))
            .map(Owner::stream);
        if let Some(process) = &descriptor.process {
            let stream = self.add_process(uuid, &descriptor, process);
            if let Some(sequence) = self.sequences.get_mut(&sequence_id) {
                sequence.stream = Some(stream);
            }
        } else if let (Some(thread), Some(stream)) = (&descriptor.thread, parent) {
            let tid = thread.tid.unwrap_or(0) as u64;
            self.tracks.insert(uuid, Owner::Thread(stream, tid));
            let name = thread.thread_name.clone().unwrap_or_default();
            let Some(data) = self.streams.get_mut(&stream) else {
                return;
            };
            if !name.is_empty() && data.threads.get(&tid) != Some(&name) {
                data.threads.insert(tid, name);
                self.ready.push_back(MergedItem::Thread(stream, tid));
            }
        } else if let Some(stream) = parent {
            self.tracks.insert(uuid, Owner::Other(stream));
        }
    }

    fn add_process(
        &mut self,
        uuid: u64,
        descriptor: &pb::TrackDescriptor,
        process: &pb::ProcessDescriptor,
    ) -> StreamId {
        if let Some(Owner::Process(stream)) = self.tracks.get(&uuid) {
            return *stream;
        }
        let mut info = ProcessInfo {
            pid: process.pid.unwrap_or(0) as u32,
            argv: process.cmdline.clone(),
            ..ProcessInfo::default()
        };
        let name = process.process_name.clone().unwrap_or_default();
        let suffix = format!(" (pid {})", info.pid);
        info.session = name.strip_suffix(&suffix).unwrap_or(&name).to_owned();
        let wanted = descriptor
            .description
            .as_deref()
            .and_then(|text| format::parse_description(text, &mut info));
        // Concatenated files may reuse a stream id: the later one moves.
        let stream = match wanted {
            Some(id) if !self.streams.contains_key(&id) => id,
            _ => StreamId(self.streams.keys().next_back().map_or(0, |s| s.0 + 1)),
        };
        self.streams.insert(stream, StreamData::new(info));
        self.tracks.insert(uuid, Owner::Process(stream));
        self.ready.push_back(MergedItem::Process(stream));
        stream
    }

    fn process_tree(&mut self, sequence_id: u32, tree: &pb::ProcessTree) {
        let stream = self.sequences.get(&sequence_id).and_then(|s| s.stream);
        let Some(data) = stream.and_then(|s| self.streams.get_mut(&s)) else {
            return;
        };
        for process in &tree.processes {
            if process.pid.map(|p| p as u32) == Some(data.info.pid) {
                data.info.ppid = process.ppid.unwrap_or(0) as u32;
            }
        }
    }

    fn track_event(
        &mut self,
        sequence_id: u32,
        ts_ns: Option<u64>,
        event: &pb::TrackEvent,
    ) -> Result<(), String> {
        let sequence = self.sequences.entry(sequence_id).or_default();
        let track = event.track_uuid.or(sequence.default_track).unwrap_or(0);
        match self.tracks.get(&track) {
            Some(&Owner::Thread(stream, tid)) => {
                let ts_ns = ts_ns.ok_or("a thread event without a timestamp")?;
                self.thread_event(sequence_id, stream, tid, ts_ns, event)
            }
            Some(&Owner::Process(stream)) => {
                self.process_event(stream, ts_ns.unwrap_or(0), event);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn thread_event(
        &mut self,
        sequence_id: u32,
        stream: StreamId,
        tid: u64,
        ts_ns: u64,
        event: &pb::TrackEvent,
    ) -> Result<(), String> {
        let Some(sequence) = self.sequences.get(&sequence_id) else {
            return Ok(());
        };
        let Some(data) = self.streams.get_mut(&stream) else {
            return Ok(());
        };
        let category = sequence.category(event);
        let named = match event.name_field {
            Some(NameField::NameIid(iid)) => {
                let Some(category) = category else {
                    return Ok(()); // not one of rtrace's function events
                };
                let (id, new) = data.function(sequence, iid, category)?;
                if new {
                    self.ready.push_back(MergedItem::Function(stream, id));
                }
                Some(Frame {
                    function: id.0,
                    category,
                })
            }
            _ => None,
        };
        let stack = data.stacks.entry(tid).or_default();
        let (kind, function, line) = match (Type::try_from(event.r#type.unwrap_or(0)), named) {
            (Ok(Type::SliceBegin), Some(frame)) => {
                stack.push(frame);
                let kind = match frame.category {
                    Category::C => Kind::CCall,
                    Category::Python => Kind::Call,
                };
                (kind, frame.function, 0)
            }
            (Ok(Type::SliceEnd), named) => {
                let frame = close(stack, named).ok_or("a slice end without an open slice")?;
                let kind = match frame.category {
                    Category::C => Kind::CReturn,
                    Category::Python if sequence.flag(event, ArgName::Exception) => Kind::Exception,
                    Category::Python => Kind::Return,
                };
                (kind, frame.function, 0)
            }
            (Ok(Type::Instant), Some(frame)) => match sequence.uint_arg(event, ArgName::Line) {
                Some(line) => (Kind::Line, frame.function, line as u32),
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let event = Event {
            ts_ns,
            tid,
            kind,
            function: FunctionId(function),
            line,
        };
        self.ready
            .push_back(MergedItem::Event(MergedEvent { stream, event }));
        Ok(())
    }

    /// Reads a stream's end instant.
    fn process_event(&mut self, stream: StreamId, ts_ns: u64, event: &pb::TrackEvent) {
        let truncated = match &event.name_field {
            Some(NameField::Name(name)) if name == format::END_CLEAN => false,
            Some(NameField::Name(name)) if name == format::END_TRUNCATED => true,
            _ => return,
        };
        let Some(data) = self.streams.get_mut(&stream) else {
            return;
        };
        let arg = |key: &str| {
            event
                .debug_annotations
                .iter()
                .find_map(|a| match (&a.name_field, &a.value) {
                    (Some(ArgNameField::Name(name)), Some(Value::UintValue(v))) if name == key => {
                        Some(*v)
                    }
                    _ => None,
                })
        };
        data.end = Some(StreamEnd {
            events: arg(format::END_ARG_EVENTS).unwrap_or(0),
            lost: arg(format::END_ARG_LOST).unwrap_or(0),
            truncated,
            last_ts_ns: ts_ns,
        });
        self.ready.push_back(MergedItem::StreamEnd(stream));
    }
}

impl<R: Read> Iterator for MergedReader<R> {
    type Item = Result<MergedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Feeds everything `reader` reads to `sink`, in the order a merge would
/// (processes, functions and threads before the events that use them), then
/// finishes it: e.g. to turn a merged Perfetto file into Chrome JSON.
pub fn replay<R: Read, S: TimelineSink + ?Sized>(
    reader: &mut MergedReader<R>,
    sink: &mut S,
) -> Result<()> {
    let io = |source| Error::Io {
        action: "writing the replayed timeline",
        source,
    };
    while let Some(item) = reader.next_item()? {
        match item {
            MergedItem::Process(s) => match reader.process(s) {
                Some(info) => sink.process(s, info).map_err(io)?,
                None => continue,
            },
            MergedItem::Function(s, id) => match reader.function(s, id) {
                Some(info) => sink.function(s, info).map_err(io)?,
                None => continue,
            },
            MergedItem::Thread(s, tid) => match reader.thread_name(s, tid) {
                Some(name) => sink.thread(s, tid, name).map_err(io)?,
                None => continue,
            },
            MergedItem::Event(e) => sink.event(e.stream, &e.event).map_err(io)?,
            MergedItem::StreamEnd(s) => match reader.stream_end(s) {
                Some(end) => sink.stream_end(s, end).map_err(io)?,
                None => continue,
            },
        }
    }
    sink.finish().map_err(io)
}

/// Ends the innermost open slice, or — for an end that names its slice —
/// that slice and the ones inside it, as the writer does.
fn close(stack: &mut Vec<Frame>, named: Option<Frame>) -> Option<Frame> {
    let Some(frame) = named else {
        return stack.pop();
    };
    if let Some(i) = stack.iter().rposition(|open| *open == frame) {
        stack.truncate(i);
    }
    Some(frame)
}

/// Who a track belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Process(StreamId),
    Thread(StreamId, u64),
    /// Another track of a process (the lost-events counter).
    Other(StreamId),
}

impl Owner {
    fn stream(&self) -> StreamId {
        match *self {
            Owner::Process(s) | Owner::Thread(s, _) | Owner::Other(s) => s,
        }
    }
}

/// An open slice: which function, called as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    function: u32,
    category: Category,
}

/// What is known about one process.
struct StreamData {
    info: ProcessInfo,
    functions: HashMap<u32, FunctionInfo>,
    threads: BTreeMap<u64, String>,
    stacks: HashMap<u64, Vec<Frame>>,
    end: Option<StreamEnd>,
}

impl StreamData {
    fn new(info: ProcessInfo) -> Self {
        StreamData {
            info,
            functions: HashMap::new(),
            threads: BTreeMap::new(),
            stacks: HashMap::new(),
            end: None,
        }
    }

    /// The function an event's `name_iid` names (interned on `sequence`),
    /// and whether this is its first use in the process.
    fn function(
        &mut self,
        sequence: &Sequence,
        iid: u64,
        category: Category,
    ) -> Result<(FunctionId, bool), String> {
        let id = iid
            .checked_sub(1)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("event name id {iid} is not a function id + 1"))?;
        if self.functions.contains_key(&id) {
            return Ok((FunctionId(id), false));
        }
        let name = sequence
            .names
            .get(&iid)
            .ok_or_else(|| format!("event name id {iid} is used before it is interned"))?;
        let location = sequence.locations.get(&iid);
        let qualified = location.and_then(|l| l.function_name.as_deref());
        let module = qualified
            .and_then(|q| q.strip_suffix(name.as_str()))
            .and_then(|m| m.strip_suffix('.'))
            .unwrap_or("");
        let info = FunctionInfo {
            id: FunctionId(id),
            name: name.clone(),
            module: module.to_owned(),
            file: location
                .and_then(|l| l.file_name.clone())
                .unwrap_or_default(),
            line: location.and_then(|l| l.line_number).unwrap_or(0),
            native: category == Category::C,
        };
        self.functions.insert(id, info);
        Ok((FunctionId(id), true))
    }
}

/// The incremental state of one packet sequence.
#[derive(Default)]
struct Sequence {
    /// The process whose sequence this is (for its process tree).
    stream: Option<StreamId>,
    default_clock: Option<u32>,
    default_track: Option<u64>,
    /// Current value of the incremental clock, once a snapshot set it.
    clock_ns: Option<u64>,
    names: HashMap<u64, String>,
    locations: HashMap<u64, pb::SourceLocation>,
    categories: HashMap<u64, String>,
    arg_names: HashMap<u64, String>,
}

impl Sequence {
    fn intern(&mut self, interned: pb::InternedData) {
        for name in interned.event_names {
            self.names
                .insert(name.iid.unwrap_or(0), name.name.unwrap_or_default());
        }
        for location in interned.source_locations {
            self.locations.insert(location.iid.unwrap_or(0), location);
        }
        for category in interned.event_categories {
            self.categories
                .insert(category.iid.unwrap_or(0), category.name.unwrap_or_default());
        }
        for arg in interned.debug_annotation_names {
            self.arg_names
                .insert(arg.iid.unwrap_or(0), arg.name.unwrap_or_default());
        }
    }

    fn clocks(&mut self, snapshot: &pb::ClockSnapshot) {
        for clock in &snapshot.clocks {
            if clock.clock_id == Some(format::CLOCK_INCREMENTAL) {
                self.clock_ns = clock.timestamp;
            }
        }
    }

    /// A packet's timestamp in CLOCK_MONOTONIC ns.
    fn timestamp(&mut self, ts: Option<u64>, clock: Option<u32>) -> Result<Option<u64>, String> {
        let Some(ts) = ts else {
            return Ok(None);
        };
        if clock.or(self.default_clock) != Some(format::CLOCK_INCREMENTAL) {
            return Ok(Some(ts));
        }
        let base = self
            .clock_ns
            .ok_or("an incremental timestamp before the clock snapshot")?;
        let now = base.wrapping_add(ts);
        self.clock_ns = Some(now);
        Ok(Some(now))
    }

    /// The rtrace category of an event, if it has one.
    fn category(&self, event: &pb::TrackEvent) -> Option<Category> {
        let iid = event.category_iids.first()?;
        Category::from_name(self.categories.get(iid)?)
    }

    fn arg<'e>(&self, event: &'e pb::TrackEvent, arg: ArgName) -> Option<&'e Value> {
        event
            .debug_annotations
            .iter()
            .find_map(|a| match a.name_field {
                Some(ArgNameField::NameIid(iid))
                    if self.arg_names.get(&iid).map(String::as_str) == Some(arg.name()) =>
                {
                    a.value.as_ref()
                }
                _ => None,
            })
    }

    fn flag(&self, event: &pb::TrackEvent, arg: ArgName) -> bool {
        matches!(self.arg(event, arg), Some(Value::BoolValue(true)))
    }

    fn uint_arg(&self, event: &pb::TrackEvent, arg: ArgName) -> Option<u64> {
        match self.arg(event, arg)? {
            Value::UintValue(v) => Some(*v),
            _ => None,
        }
    }
}

/// Reads the packets of a file.
struct PacketReader<R> {
    inner: R,
    what: String,
    offset: u64,
    truncated: bool,
    done: bool,
    buf: Vec<u8>,
}

impl<R: Read> PacketReader<R> {
    /// The next packet and its byte offset, or `None` at the end (or at a
    /// torn last packet).
    fn next_packet(&mut self) -> Result<Option<(pb::TracePacket, u64)>> {
        if self.done {
            return Ok(None);
        }
        let start = self.offset;
        let mut tag = [0u8; 1];
        if self.read(&mut tag)? == 0 {
            self.done = true;
            return Ok(None);
        }
        if tag[0] != format::PACKET_TAG {
            self.done = true;
            let reason = format!("expected a packet (byte 0x0a), found 0x{:02x}", tag[0]);
            return Err(self.malformed(start, reason));
        }
        let Some(len) = self.read_length()? else {
            return Ok(None);
        };
        if len > format::MAX_PACKET_BYTES {
            self.done = true;
            let reason = format!("a packet of {len} bytes is over the limit");
            return Err(self.malformed(start, reason));
        }
        self.buf.resize(len as usize, 0);
        let mut buf = std::mem::take(&mut self.buf);
        let got = self.read(&mut buf);
        self.buf = buf;
        if got? < self.buf.len() {
            self.end_truncated();
            return Ok(None);
        }
        match pb::TracePacket::decode(self.buf.as_slice()) {
            Ok(packet) => Ok(Some((packet, start))),
            Err(e) => {
                self.done = true;
                Err(self.malformed(start, format!("undecodable packet: {e}")))
            }
        }
    }

    /// A varint length; `None` at a torn one.
    fn read_length(&mut self) -> Result<Option<u64>> {
        let mut value = 0u64;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            if self.read(&mut byte)? == 0 {
                self.end_truncated();
                return Ok(None);
            }
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                return Ok(Some(value));
            }
        }
        self.done = true;
        let reason = "a packet length is not a valid varint".to_owned();
        Err(self.malformed(self.offset, reason))
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "reading a merged trace",
                        source,
                    })
                }
            }
        }
        self.offset += filled as u64;
        Ok(filled)
    }

    fn end_truncated(&mut self) {
        self.truncated = true;
        self.done = true;
    }

    fn malformed(&self, offset: u64, reason: String) -> Error {
        Error::Malformed {
            what: self.what.clone(),
            offset,
            reason,
        }
    }
}
