//! Writes a merged timeline as a Perfetto trace, packet by packet.
//!
//! Layout of the file (every choice checked by loading files into Perfetto
//! UI's trace processor and reading its tables and `stats`):
//!
//! - The first packet is a clock snapshot that makes CLOCK_MONOTONIC the
//!   trace's clock (`primary_trace_clock`); timestamps are shown as written.
//! - Each stream (traced process) gets a **process sequence** (its own
//!   `trusted_packet_sequence_id`) holding its process track descriptor —
//!   named `<session> (pid N)`, labelled `host=<host>`, with the stream's
//!   metadata in the description — and a `ProcessTree` entry with pid, ppid
//!   and cmdline `[<session> (pid N), argv...]`, which gives Perfetto the
//!   parent link (Perfetto names a process after the first cmdline entry,
//!   so that entry is our name rather than `argv[0]`).
//! - Each thread of a stream gets a **thread sequence** of its own, started
//!   with `SEQ_INCREMENTAL_STATE_CLEARED`, `first_packet_on_sequence`,
//!   defaults (the thread's track and the incremental clock) and a clock
//!   snapshot pairing the incremental clock with CLOCK_MONOTONIC. Sequences
//!   are never shared between streams (or threads), so interned ids never
//!   leak from one process to another.
//! - Events: `call`/`c_call` are `TYPE_SLICE_BEGIN` with an interned name
//!   (`EventName` iid = function id + 1), category `python`/`c` and, for
//!   functions with a source file, an interned `SourceLocation` (file,
//!   `module.qualname`, first line). Every function's `SourceLocation` is
//!   interned (the reader takes the module from it), but only those with a
//!   file are referenced: for C functions it would add 4 bytes per call
//!   and show nothing but the module;
//!   `return`/`c_return`/`exception` are bare `TYPE_SLICE_END`s (an
//!   exception adds the argument `exception: true`); `line` is an instant
//!   named after the function with the argument `line`. Interned data is
//!   emitted in the packet that first uses it on the sequence.
//! - Timestamps on a thread sequence are deltas of the incremental clock. An
//!   event older than the previous one on its thread (a late event) is
//!   written with an absolute CLOCK_MONOTONIC timestamp instead.
//! - When a stream ends, its process track gets an instant `rtrace: stream
//!   end` — or `rtrace: stream truncated — process died` when the stream
//!   stopped without its end marker — with the arguments `events`, `lost`
//!   and `truncated`; a stream that lost events also gets a counter track
//!   `rtrace lost events` holding the total over the stream's lifetime.
//!
//! A call and its return take about 15 bytes per event on average (see the
//! size test). `SEQ_NEEDS_INCREMENTAL_STATE` is not set on events: it only
//! tells a reader to skip packets after a loss of packets, and a file
//! written here loses none (each costs 2 bytes per event).
//!
//! Threads that never had an event get no track (a thread named by the
//! merge but idle shows nothing in Perfetto either).

mod output;
mod packets;
mod thread;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use crate::event::Kind;
use crate::idmap::{IdMap, IdSet};
use crate::read::Event;
use crate::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use crate::writer::FunctionInfo;

use super::perfetto_format::{self as format, pb};
use output::Output;
use packets::{
    clock_snapshot, end_packets, first_packet, process_descriptor, process_tree, sequence_packet,
    ProcessTrack,
};
use thread::ThreadTrack;

/// A `TimelineSink` that writes a Perfetto trace to `W` as it goes: memory
/// holds interning state and open-slice stacks, never the trace.
pub struct PerfettoWriter<W: Write> {
    out: Output<W>,
    streams: IdMap<StreamId, StreamState>,
    sequences: Sequences,
    header_written: bool,
    /// Newest timestamp seen, for stream ends that carry none.
    watermark_ns: u64,
}

impl<W: Write> PerfettoWriter<W> {
    /// A writer that writes to `out` (wrap files in nothing: the writer
    /// buffers itself).
    pub fn new(out: W) -> Self {
        PerfettoWriter {
            out: Output::new(out),
            streams: IdMap::default(),
            sequences: Sequences { next: 1 },
            header_written: false,
            watermark_ns: 0,
        }
    }

    /// Bytes of trace produced so far (written or still buffered).
    pub fn bytes(&self) -> u64 {
        self.out.bytes()
    }

    /// Writes what is buffered to the output and flushes it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The output, after `finish`.
    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }

    fn ensure_header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        self.header_written = true;
        let mut packet = first_packet(self.sequences.next());
        packet.data = Some(pb::trace_packet::Data::ClockSnapshot(clock_snapshot(
            0, false,
        )));
        self.out.packet(&packet)
    }

    /// The thread's track, its sequence started (at `ts_ns`) if it was not.
    fn started_thread(
        &mut self,
        stream: StreamId,
        tid: u64,
        ts_ns: u64,
    ) -> io::Result<&mut ThreadTrack> {
        self.ensure_header()?;
        let state = open_stream(&mut self.streams, stream)?;
        let pid = state.pid;
        let thread = state.thread(tid, &mut self.sequences);
        if !thread.started {
            for packet in thread.start(ts_ns, pid) {
                self.out.packet(&packet)?;
            }
        }
        Ok(thread)
    }
}

impl<W: Write> PerfettoWriter<W> {
    /// Writes the packet of a common event of a started thread by hand
    /// (see `thread::hot`); false if it takes the general path.
    fn hot_event(&mut self, stream: StreamId, event: &Event) -> bool {
        self.hot_run(stream, std::slice::from_ref(event)) == 1
    }

    /// Writes the packets of the longest prefix of `events` (of one
    /// thread) that the hot path takes; returns its length.
    fn hot_run(&mut self, stream: StreamId, events: &[Event]) -> usize {
        let Some(first) = events.first() else {
            return 0;
        };
        let Some(state) = self.streams.get_mut(&stream) else {
            return 0;
        };
        let tid = first.tid;
        let Some(thread) = state.threads.get_mut(&tid).filter(|t| t.started) else {
            return 0;
        };
        let out = &mut self.out;
        let n = events
            .iter()
            .take_while(|e| {
                e.tid == tid
                    && out
                        .room()
                        .and_then(|room| thread.encode_hot(e, &state.files, room))
                        .map(|len| out.advance(len))
                        .is_some()
            })
            .count();
        if n > 0 {
            state.first_ts_ns.get_or_insert(first.ts_ns);
            let newest = events[..n].iter().map(|e| e.ts_ns).max().unwrap_or(0);
            self.watermark_ns = self.watermark_ns.max(newest);
        }
        n
    }
}

impl<W: Write> TimelineSink for PerfettoWriter<W> {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()> {
        self.ensure_header()?;
        if self.streams.contains_key(&stream) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stream {} announced twice", stream.0),
            ));
        }
        let sequence = self.sequences.next();
        let uuid = format::process_uuid(stream, process);
        let mut packet = first_packet(sequence);
        packet.data = Some(pb::trace_packet::Data::TrackDescriptor(process_descriptor(
            stream, uuid, process,
        )));
        self.out.packet(&packet)?;
        if process.ppid != 0 {
            let mut packet = sequence_packet(sequence);
            packet.data = Some(pb::trace_packet::Data::ProcessTree(process_tree(process)));
            self.out.packet(&packet)?;
        }
        self.streams.insert(
            stream,
            StreamState {
                uuid,
                pid: process.pid,
                sequence,
                functions: HashMap::new(),
                files: IdSet::default(),
                threads: IdMap::default(),
                counters: HashSet::new(),
                first_ts_ns: None,
            },
        );
        Ok(())
    }

    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        let state = open_stream(&mut self.streams, stream)?;
        // A function interned on some sequence keeps its first description:
        // Perfetto forbids redefining an interned id.
        let id = function.id.0;
        if !state.functions.contains_key(&id) {
            if !function.file.is_empty() {
                state.files.insert(id);
            }
            state.functions.insert(id, function.clone());
        }
        Ok(())
    }

    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()> {
        let state = open_stream(&mut self.streams, stream)?;
        let pid = state.pid;
        let thread = state.thread(tid, &mut self.sequences);
        if thread.name == name {
            return Ok(());
        }
        thread.name = name.to_owned();
        if thread.started {
            // Renamed after its descriptor went out: describe it again.
            let packet = thread.descriptor_packet(pid);
            self.out.packet(&packet)?;
        }
        Ok(())
    }

    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        if self.hot_event(stream, event) {
            return self.out.written();
        }
        self.watermark_ns = self.watermark_ns.max(event.ts_ns);
        self.started_thread(stream, event.tid, event.ts_ns)?;
        let state = open_stream(&mut self.streams, stream)?;
        state.first_ts_ns.get_or_insert(event.ts_ns);
        if event.kind == Kind::Counter && state.counters.insert(event.function.0) {
            let packet = counter_descriptor(state, event.function.0);
            self.out.packet(&packet)?;
        }
        let StreamState {
            functions,
            threads,
            uuid,
            ..
        } = state;
        let Some(thread) = threads.get_mut(&event.tid) else {
            return Ok(()); // started_thread just made it
        };
        let mut packet = thread.encode(event, functions);
        if event.kind == Kind::Counter {
            if let Some(pb::trace_packet::Data::TrackEvent(e)) = &mut packet.data {
                e.track_uuid = Some(format::counter_uuid(*uuid, event.function.0));
            }
        }
        self.out.packet(&packet)
    }

    fn events(&mut self, stream: StreamId, events: &[Event]) -> io::Result<()> {
        let mut rest = events;
        while !rest.is_empty() {
            let n = self.hot_run(stream, rest);
            self.out.written()?;
            if let Some((event, after)) = rest[n..].split_first() {
                self.event(stream, event)?;
                rest = after;
            } else {
                break;
            }
        }
        Ok(())
    }

    fn stream_end(&mut self, stream: StreamId, end: &StreamEnd) -> io::Result<()> {
        let watermark = self.watermark_ns;
        let state = open_stream(&mut self.streams, stream)?;
        let ts_ns = if end.last_ts_ns > 0 {
            end.last_ts_ns
        } else {
            watermark
        };
        let first_ts_ns = state.first_ts_ns.unwrap_or(ts_ns).min(ts_ns);
        let track = ProcessTrack {
            sequence: state.sequence,
            uuid: state.uuid,
        };
        let packets = end_packets(track, end, first_ts_ns, ts_ns);
        self.streams.remove(&stream);
        for packet in &packets {
            self.out.packet(packet)?;
        }
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.ensure_header()?;
        self.out.flush()
    }
}

/// The stream's state, or an error naming a contract breach of the caller.
fn open_stream(
    streams: &mut IdMap<StreamId, StreamState>,
    stream: StreamId,
) -> io::Result<&mut StreamState> {
    streams.get_mut(&stream).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "stream {} is not open (no process() yet, or ended)",
                stream.0
            ),
        )
    })
}

/// Hands out `trusted_packet_sequence_id`s: 1, 2, ... (0 is invalid).
struct Sequences {
    next: u32,
}

impl Sequences {
    fn next(&mut self) -> u32 {
        let sequence = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        sequence
    }
}

/// What the writer keeps per open stream.
struct StreamState {
    uuid: u64,
    pid: u32,
    /// The process sequence.
    sequence: u32,
    functions: HashMap<u32, FunctionInfo>,
    /// Functions (of `functions`) that have a source file.
    files: IdSet,
    threads: IdMap<u64, ThreadTrack>,
    /// User counters (by name id) whose track is described.
    counters: HashSet<u32>,
    first_ts_ns: Option<u64>,
}

/// The track of a user counter of the stream, on the process sequence.
fn counter_descriptor(state: &StreamState, function: u32) -> pb::TracePacket {
    let name = state
        .functions
        .get(&function)
        .map_or_else(|| format!("<counter {function}>"), |f| f.name.clone());
    let descriptor = pb::TrackDescriptor {
        uuid: Some(format::counter_uuid(state.uuid, function)),
        parent_uuid: Some(state.uuid),
        name: Some(name),
        description: Some(format!("{}{function}", format::COUNTER_DESCRIPTION)),
        counter: Some(pb::CounterDescriptor::default()),
        ..Default::default()
    };
    let mut packet = sequence_packet(state.sequence);
    packet.data = Some(pb::trace_packet::Data::TrackDescriptor(descriptor));
    packet
}

impl StreamState {
    /// The thread's track, made (with a sequence of its own) on first use.
    fn thread(&mut self, tid: u64, sequences: &mut Sequences) -> &mut ThreadTrack {
        let process_uuid = self.uuid;
        self.threads
            .entry(tid)
            .or_insert_with(|| ThreadTrack::new(sequences.next(), process_uuid, tid))
    }
}
