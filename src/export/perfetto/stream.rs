//! One stream's part of the Perfetto file: its functions, its threads'
//! tracks and sequences, and the encoding of its events. A stream's packets
//! depend only on its own items in its own order (each thread has its own
//! sequence), never on the other streams, so this runs either inside the
//! writer, or ahead of the merge on the stream's reader thread (`encoder`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::event::Kind;
use crate::idmap::{IdMap, IdSet};
use crate::read::{Event, Plain};
use crate::writer::FunctionInfo;

use super::super::perfetto_format::{self as format, pb};
use super::output::PacketBuf;
use super::packets::sequence_packet;
use super::thread::{HotEvent, ThreadTrack};

/// Hands out `trusted_packet_sequence_id`s: 1, 2, ... (0 is invalid), to
/// the writer and to every stream's encoder.
#[derive(Debug, Clone)]
pub(super) struct Sequences(Arc<AtomicU32>);

impl Sequences {
    pub(super) fn new() -> Self {
        Sequences(Arc::new(AtomicU32::new(1)))
    }

    pub(super) fn next(&self) -> u32 {
        loop {
            let sequence = self.0.fetch_add(1, Ordering::Relaxed);
            if sequence != 0 {
                return sequence;
            }
        }
    }
}

/// A stream's encoding state.
pub(super) struct StreamCoder {
    uuid: u64,
    pid: u32,
    /// The process sequence (user counters are described there).
    sequence: u32,
    sequences: Sequences,
    functions: HashMap<u32, FunctionInfo>,
    /// Functions (of `functions`) that have a source file.
    files: IdSet,
    threads: IdMap<u64, ThreadTrack>,
    /// User counters (by thread and name id) whose track is described
    /// before that thread's first value: the merge may put one thread's
    /// first value before another's, so each describes it (Perfetto takes
    /// a descriptor repeated unchanged).
    counters: HashSet<(u64, u32)>,
}

impl StreamCoder {
    pub(super) fn new(uuid: u64, pid: u32, sequence: u32, sequences: Sequences) -> Self {
        StreamCoder {
            uuid,
            pid,
            sequence,
            sequences,
            functions: HashMap::new(),
            files: IdSet::default(),
            threads: IdMap::default(),
            counters: HashSet::new(),
        }
    }

    /// Learns a function. One interned on some sequence keeps its first
    /// description: Perfetto forbids redefining an interned id.
    pub(super) fn function(&mut self, function: &FunctionInfo) {
        let id = function.id.0;
        if !self.functions.contains_key(&id) {
            if !function.file.is_empty() {
                self.files.insert(id);
            }
            self.functions.insert(id, function.clone());
        }
    }

    /// Names a thread; returns its descriptor packet if its track was
    /// already described under another name (to be written again).
    pub(super) fn thread(&mut self, tid: u64, name: &str) -> Option<pb::TracePacket> {
        let pid = self.pid;
        let thread = self.track(tid);
        if thread.name == name {
            return None;
        }
        thread.name = name.to_owned();
        // Renamed after its descriptor went out: describe it again.
        thread.started.then(|| thread.descriptor_packet(pid))
    }

    /// Writes the packets of `events` (in the stream's order) to `out`,
    /// and where each event's bytes end to `ends`.
    pub(super) fn events(&mut self, events: &[Event], out: &mut PacketBuf, ends: &mut Vec<u32>) {
        let mut rest = events;
        while let Some(tid) = rest.first().map(|e| e.tid) {
            // The hot path takes the thread's events up to another thread's,
            // or one with a text.
            let hot = rest
                .iter()
                .map(|e| (e.tid == tid).then_some(e).and_then(HotEvent::of));
            let n = self.hot_run(tid, hot, out, ends);
            let Some((event, after)) = rest[n..].split_first() else {
                break;
            };
            self.cold_event(event, out);
            ends.push(out.len() as u32);
            rest = after;
        }
    }

    /// Writes the packets of the longest prefix of thread `tid`'s `events`
    /// that the hot path takes (`None` ends it; see `thread::hot`);
    /// returns its length.
    fn hot_run(
        &mut self,
        tid: u64,
        events: impl Iterator<Item = Option<HotEvent>>,
        out: &mut PacketBuf,
        ends: &mut Vec<u32>,
    ) -> usize {
        let Some(thread) = self.threads.get_mut(&tid).filter(|t| t.started) else {
            return 0;
        };
        let files = &self.files;
        events
            .map_while(|event| event)
            .take_while(|&event| {
                let Some(n) = thread.encode_hot(event, files, out.room()) else {
                    return false;
                };
                out.advance(n);
                ends.push(out.len() as u32);
                true
            })
            .count()
    }

    /// Writes the packets of thread `tid`'s `plain` events to `out`, and
    /// where each event's bytes end to `ends`, as `events` would for the
    /// same events.
    pub(super) fn plain(
        &mut self,
        tid: u64,
        plain: &Plain,
        out: &mut PacketBuf,
        ends: &mut Vec<u32>,
    ) {
        let mut done = 0;
        while done < plain.len() {
            let codes = plain.codes().get(done..).unwrap_or_default();
            let times = plain.ts_ns().get(done..).unwrap_or_default();
            let hot = codes.iter().zip(times).map(|(&(function, kind), &ts_ns)| {
                Some(HotEvent {
                    ts_ns,
                    kind,
                    function: function.0,
                    line: 0,
                })
            });
            done += self.hot_run(tid, hot, out, ends);
            if done < plain.len() {
                self.cold_event(&plain.event(tid, done), out);
                ends.push(out.len() as u32);
                done += 1;
            }
        }
    }

    /// The general path: starts the thread's sequence and describes a user
    /// counter's track on first use, and builds the packet with prost.
    fn cold_event(&mut self, event: &Event, out: &mut PacketBuf) {
        let pid = self.pid;
        let thread = self.track(event.tid);
        if !thread.started {
            for packet in thread.start(event.ts_ns, pid) {
                out.packet(&packet);
            }
        }
        let counter = (event.kind == Kind::Counter).then_some(event.function.0);
        if let Some(function) = counter.filter(|&f| self.counters.insert((event.tid, f))) {
            out.packet(&self.counter_descriptor(function));
        }
        let Some(thread) = self.threads.get_mut(&event.tid) else {
            return; // `track` just made it
        };
        let mut packet = thread.encode(event, &self.functions);
        if let (Some(function), Some(pb::trace_packet::Data::TrackEvent(e))) =
            (counter, &mut packet.data)
        {
            e.track_uuid = Some(format::counter_uuid(self.uuid, function));
        }
        out.packet(&packet);
    }

    /// The thread's track, made (with a sequence of its own) on first use.
    fn track(&mut self, tid: u64) -> &mut ThreadTrack {
        let (sequences, uuid) = (&self.sequences, self.uuid);
        self.threads
            .entry(tid)
            .or_insert_with(|| ThreadTrack::new(sequences.next(), uuid, tid))
    }

    /// The track of a user counter of the stream, on the process sequence.
    fn counter_descriptor(&self, function: u32) -> pb::TracePacket {
        let name = self
            .functions
            .get(&function)
            .map_or_else(|| format!("<counter {function}>"), |f| f.name.clone());
        let descriptor = pb::TrackDescriptor {
            uuid: Some(format::counter_uuid(self.uuid, function)),
            parent_uuid: Some(self.uuid),
            name: Some(name),
            description: Some(format!("{}{function}", format::COUNTER_DESCRIPTION)),
            counter: Some(pb::CounterDescriptor::default()),
            ..Default::default()
        };
        let mut packet = sequence_packet(self.sequence);
        packet.data = Some(pb::trace_packet::Data::TrackDescriptor(descriptor));
        packet
    }
}
