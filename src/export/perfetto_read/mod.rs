//! Reads the Perfetto files `PerfettoWriter` writes back into what the
//! merge fed it: processes, functions, thread names, events (with the
//! process they belong to) and how each stream ended. So a merged timeline
//! can be iterated like a stream file (`EventReader`).
//!
//! Only rtrace's own layout is understood (see `perfetto`); packets of any
//! other kind are skipped. A torn last packet (the writer was killed
//! mid-write) ends the file as truncated instead of failing.

mod packets;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::event::{FunctionId, Kind};
use crate::idmap::IdMap;
use crate::mark::Mark;
use crate::read::Event;
use crate::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use crate::writer::FunctionInfo;
use crate::{Error, Result};

use super::perfetto_format::{self as format, pb};
use packets::PacketReader;
use pb::debug_annotation::{NameField as ArgNameField, Value};
use pb::track_event::{CounterValueField, NameField};
use state::{Owner, Sequence, StreamData};

/// One event of a merged timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedEvent {
    /// The process (stream) it happened in.
    pub stream: StreamId,
    pub event: Event,
}

/// What reading a merged file yields, in file order: each process, function
/// and thread name before the first event that needs it.
#[derive(Debug, Clone, PartialEq)]
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
    tracks: IdMap<u64, Owner>,
    sequences: IdMap<u32, Sequence>,
    /// The packet being read, kept to decode the next into.
    packet: Option<Box<pb::TracePacket>>,
    ready: VecDeque<MergedItem>,
}

impl MergedReader<BufReader<File>> {
    /// Opens a merged file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            error: source,
        })?;
        Ok(MergedReader::new(
            BufReader::new(file),
            path.display().to_string(),
        ))
    }
}

impl<R: BufRead> MergedReader<R> {
    /// Reads packets from `input`; `what` names it in errors.
    pub fn new(input: R, what: String) -> Self {
        MergedReader {
            packets: PacketReader::new(input, what),
            streams: BTreeMap::new(),
            tracks: IdMap::default(),
            sequences: IdMap::default(),
            packet: None,
            ready: VecDeque::new(),
        }
    }

    /// Bytes of the input read so far.
    pub fn bytes_read(&self) -> u64 {
        self.packets.offset()
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
            // One packet decoded in place again and again: a `TracePacket`
            // is large, and returning a new one by value copied it several
            // times a packet (a fifth of the reader's instructions).
            let mut packet = self.packet.take().unwrap_or_default();
            let next = self.packets.next_packet(&mut packet);
            let applied = match next {
                Ok(Some(offset)) => self
                    .apply(&mut packet)
                    .map_err(|reason| self.packets.malformed(offset, reason)),
                Ok(None) => {
                    self.packet = Some(packet);
                    return Ok(None);
                }
                Err(error) => Err(error),
            };
            self.packet = Some(packet);
            applied?;
        }
    }

    fn apply(&mut self, packet: &mut pb::TracePacket) -> Result<(), String> {
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
        if let Some(interned) = packet.interned_data.take() {
            sequence.intern(interned);
        }
        let ts_ns = sequence.timestamp(packet.timestamp, packet.timestamp_clock_id)?;
        match &packet.data {
            Some(pb::trace_packet::Data::ClockSnapshot(snapshot)) => sequence.clocks(snapshot),
            Some(pb::trace_packet::Data::TrackDescriptor(d)) => self.describe(sequence_id, d),
            Some(pb::trace_packet::Data::ProcessTree(tree)) => self.process_tree(sequence_id, tree),
            Some(pb::trace_packet::Data::TrackEvent(e)) => {
                return self.track_event(sequence_id, ts_ns, e)
            }
            None => {}
        }
        Ok(())
    }

    fn describe(&mut self, sequence_id: u32, descriptor: &pb::TrackDescriptor) {
        let uuid = descriptor.uuid.unwrap_or(0);
        let parent = descriptor
            .parent_uuid
            .and_then(|p| self.tracks.get(&p))
            .map(Owner::stream);
        if let Some(process) = &descriptor.process {
            let stream = self.add_process(uuid, descriptor, process);
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
            let counter = descriptor
                .description
                .as_deref()
                .and_then(|d| d.strip_prefix(format::COUNTER_DESCRIPTION))
                .and_then(|id| id.parse::<u32>().ok())
                .filter(|_| descriptor.counter.is_some());
            let Some(id) = counter else {
                self.tracks.insert(uuid, Owner::Other(stream));
                return;
            };
            self.tracks.insert(uuid, Owner::Counter(stream, id));
            let name = descriptor.name.as_deref().unwrap_or("");
            let new = self
                .streams
                .get_mut(&stream)
                .is_some_and(|data| data.counter_name(id, name));
            if new {
                self.ready
                    .push_back(MergedItem::Function(stream, FunctionId(id)));
            }
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
        let shown_pid = process.pid.unwrap_or(0) as u32;
        // The description holds the process's own pid and ppid, which the
        // descriptor may have replaced (`export::pids`); older files have
        // only the descriptor's, which was the own.
        let mut info = ProcessInfo {
            pid: shown_pid,
            argv: process.cmdline.clone(),
            ..ProcessInfo::default()
        };
        let name = process.process_name.clone().unwrap_or_default();
        let wanted = descriptor
            .description
            .as_deref()
            .and_then(|text| format::parse_description(text, &mut info));
        if info.session.is_empty() {
            let suffix = format!(" (pid {})", info.pid);
            info.session = name.strip_suffix(&suffix).unwrap_or(&name).to_owned();
        }
        // Concatenated files may reuse a stream id: the later one moves.
        let stream = match wanted {
            Some(id) if !self.streams.contains_key(&id) => id,
            _ => StreamId(self.streams.keys().next_back().map_or(0, |s| s.0 + 1)),
        };
        self.streams
            .insert(stream, StreamData::new(info, shown_pid));
        self.tracks.insert(uuid, Owner::Process(stream));
        self.ready.push_back(MergedItem::Process(stream));
        stream
    }

    fn process_tree(&mut self, sequence_id: u32, tree: &pb::ProcessTree) {
        let stream = self.sequences.get(&sequence_id).and_then(|s| s.stream);
        let Some(data) = stream.and_then(|s| self.streams.get_mut(&s)) else {
            return;
        };
        // Only files whose descriptions lack the ppid need the tree's (whose
        // ppid may be a stand-in).
        if data.info.ppid != 0 {
            return;
        }
        for process in &tree.processes {
            if process.pid.map(|p| p as u32) == Some(data.shown_pid) {
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
        let default_track = sequence.default_track;
        let track = event.track_uuid.or(default_track).unwrap_or(0);
        match self.tracks.get(&track) {
            Some(&Owner::Thread(stream, tid)) => {
                let ts_ns = ts_ns.ok_or("a thread event without a timestamp")?;
                self.thread_event(sequence_id, stream, tid, ts_ns, event)
            }
            Some(&Owner::Process(stream)) => {
                self.process_event(stream, ts_ns.unwrap_or(0), event);
                Ok(())
            }
            Some(&Owner::Counter(stream, id)) => {
                let ts_ns = ts_ns.ok_or("a counter value without a timestamp")?;
                let thread = default_track.and_then(|t| self.tracks.get(&t));
                let Some(&Owner::Thread(_, tid)) = thread else {
                    return Err("a counter value outside a thread's sequence".into());
                };
                let value = match event.counter_value_field {
                    Some(CounterValueField::DoubleCounterValue(v)) => v,
                    Some(CounterValueField::CounterValue(v)) => v as f64,
                    None => 0.0,
                };
                let mark = Mark {
                    value,
                    ..Mark::default()
                };
                let event = Event {
                    ts_ns,
                    tid,
                    kind: Kind::Counter,
                    function: FunctionId(id),
                    line: 0,
                    mark: Some(Box::new(mark)),
                    text: None,
                };
                self.ready
                    .push_back(MergedItem::Event(MergedEvent { stream, event }));
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
        let (Some(sequence), Some(data)) = (
            self.sequences.get(&sequence_id),
            self.streams.get_mut(&stream),
        ) else {
            return Ok(());
        };
        let Some(decoded) = data.thread_event(sequence, tid, ts_ns, event)? else {
            return Ok(());
        };
        let event = decoded.event;
        if decoded.new_function {
            let item = MergedItem::Function(stream, event.function);
            self.ready.push_back(item);
        }
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

impl<R: BufRead> Iterator for MergedReader<R> {
    type Item = Result<MergedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Feeds everything `reader` reads to `sink`, in the order a merge would
/// (processes, functions and threads before the events that use them), then
/// finishes it: e.g. to turn a merged Perfetto file into Chrome JSON.
pub fn replay<R: BufRead, S: TimelineSink + ?Sized>(
    reader: &mut MergedReader<R>,
    sink: &mut S,
) -> Result<()> {
    replay_with_progress(reader, sink, |_| {})
}

/// Items replayed between calls of `replay_with_progress`'s callback.
const PROGRESS_ITEMS: u32 = 16_384;

/// `replay`, calling `on_progress` with the bytes of the input read so far
/// every few thousand items and once at the end.
pub fn replay_with_progress<R: BufRead, S: TimelineSink + ?Sized>(
    reader: &mut MergedReader<R>,
    sink: &mut S,
    mut on_progress: impl FnMut(u64),
) -> Result<()> {
    let io = |source| Error::Io {
        action: "writing the replayed timeline",
        error: source,
    };
    let mut until_progress = PROGRESS_ITEMS;
    while let Some(item) = reader.next_item()? {
        until_progress -= 1;
        if until_progress == 0 {
            on_progress(reader.bytes_read());
            until_progress = PROGRESS_ITEMS;
        }
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
    on_progress(reader.bytes_read());
    sink.finish().map_err(io)
}
