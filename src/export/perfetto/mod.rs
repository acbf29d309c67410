//! Writes a merged timeline as a Perfetto trace, packet by packet.
//!
//! Layout of the file (every choice checked by loading files into Perfetto
//! UI's trace processor and reading its tables and `stats`):
//!
//! - The first packet is a clock snapshot that makes CLOCK_MONOTONIC the
//!   trace's clock (`primary_trace_clock`); timestamps are shown as written.
//! - Each stream (traced process) gets a **process sequence** (its own
//!   `trusted_packet_sequence_id`) holding its process track descriptor —
//!   named `<session> (pid N)`, labelled `host=<host>` (and `pidns=` in a
//!   container), with the stream's metadata in the description — and a
//!   `ProcessTree` entry with pid, ppid and cmdline `[<session> (pid N),
//!   argv...]`, which gives Perfetto the parent link (Perfetto names a
//!   process after the first cmdline entry, so that entry is our name
//!   rather than `argv[0]`). Descriptors and the tree carry the pids
//!   viewers are given (`export::pids`: a stand-in where another process
//!   used the pid first — on another host, in another container, or
//!   before it); the name and the description keep the process's own.
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
//!   and `truncated` (and `clock_jumps` if its clock jumped); a stream that
//!   lost events also gets a counter track `rtrace lost events` holding the
//!   total over the stream's lifetime.
//! - Clocks (see `clock`): each clock estimate of a stream adds values to
//!   its counter tracks `rtrace clock offset (ns)` and `rtrace clock
//!   uncertainty (ns)` and a clock snapshot pairing the recording host's
//!   CLOCK_MONOTONIC (sequence-scoped clock 65) with the trace clock; each
//!   clock jump an instant `rtrace: clock jump` (arguments `kind`,
//!   `jump_ns`). The process track is described again, with `clock*` lines
//!   in its description, at the first estimate and when the stream ends.
//!
//! A call and its return take about 15 bytes per event on average (see the
//! size test). `SEQ_NEEDS_INCREMENTAL_STATE` is not set on events: it only
//! tells a reader to skip packets after a loss of packets, and a file
//! written here loses none (each costs 2 bytes per event).
//!
//! Threads that never had an event get no track (a thread named by the
//! merge but idle shows nothing in Perfetto either).
//!
//! Who makes which packets: a stream's own packets (its threads' sequences,
//! its counter tracks, its events) depend only on that stream's items in
//! their order (`stream::StreamCoder`). The writer makes them itself, or
//! hands the stream's coder out as a `StreamEncoder` that runs ahead of the
//! merge on another thread (`TimelineSink::stream_encoder`), and then only
//! copies the bytes it made. Either way the packets of calls, returns,
//! exceptions and lines are written by hand once their names are interned
//! (`thread::hot`), the rest with prost.

mod clock;
mod encoder;
mod output;
mod packets;
mod stream;
mod thread;

#[cfg(test)]
mod testing {
    use crate::event::FunctionId;
    use crate::writer::FunctionInfo;

    /// Function `id` of module `m`, named `f{id}`; native without a file.
    pub(super) fn function(id: u32, file: &str) -> FunctionInfo {
        FunctionInfo {
            id: FunctionId(id),
            name: format!("f{id}"),
            module: "m".into(),
            file: file.into(),
            line: 3,
            native: file.is_empty(),
        }
    }
}

use std::io;

use crate::clock::ClockJump;
use crate::read::{Encoded, Event};
use crate::timeline::{
    ClockOffset, ClockStatus, ProcessInfo, StreamEncoder, StreamEnd, StreamId, TimelineSink,
};
use crate::writer::FunctionInfo;

use super::perfetto_format::{self as format, pb};
use super::pids::ViewerPids;
use clock::ClockState;
use encoder::{Encoder, SpareBuffers};
use output::Output;
pub use output::PerfettoOut;
use packets::{
    clock_snapshot, end_packets, first_packet, process_descriptor, process_tree, sequence_packet,
    ProcessTrack, ShownPids,
};
use stream::{Sequences, StreamCoder};

/// A `TimelineSink` that writes a Perfetto trace to `W` as it goes: memory
/// holds interning state and open-slice stacks, never the trace.
///
/// It encodes a stream's events itself, or hands that work to a
/// `StreamEncoder` (`stream_encoder`) that runs ahead of the merge; either
/// way the stream's packets are the same (only sequence ids differ).
pub struct PerfettoWriter<W: PerfettoOut> {
    out: Output<W>,
    streams: Streams,
    sequences: Sequences,
    pids: ViewerPids,
    header_written: bool,
    /// Newest timestamp seen, for stream ends that carry none.
    watermark_ns: u64,
    /// Where each event's bytes end, when the writer encodes itself (unused).
    ends: Vec<u32>,
    /// Written batches' buffers, back to the encoders.
    spare: SpareBuffers,
}

impl<W: PerfettoOut> PerfettoWriter<W> {
    /// A writer that writes to `out` (wrap files in nothing: the writer
    /// buffers itself).
    pub fn new(out: W) -> Self {
        PerfettoWriter {
            out: Output::new(out),
            streams: Streams::default(),
            sequences: Sequences::new(),
            pids: ViewerPids::new(),
            header_written: false,
            watermark_ns: 0,
            ends: Vec::new(),
            spare: SpareBuffers::new(),
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

    /// The stream's coder, unless an encoder has it.
    fn coder(&mut self, stream: StreamId) -> io::Result<Option<&mut StreamCoder>> {
        Ok(open_stream(&mut self.streams, stream)?.coder.as_mut())
    }
}

/// Notes a run of a stream's events as written; the stream's state.
fn note<'a>(
    streams: &'a mut Streams,
    watermark_ns: &mut u64,
    stream: StreamId,
    events: &[Event],
) -> io::Result<&'a mut StreamState> {
    let state = open_stream(streams, stream)?;
    if let Some(first) = events.first() {
        state.first_ts_ns.get_or_insert(first.ts_ns);
    }
    let newest = events.iter().map(|e| e.ts_ns).max().unwrap_or(0);
    *watermark_ns = (*watermark_ns).max(newest);
    Ok(state)
}

impl<W: PerfettoOut> TimelineSink for PerfettoWriter<W> {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()> {
        self.ensure_header()?;
        if self.streams.get_mut(stream).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stream {} announced twice", stream.0),
            ));
        }
        let sequence = self.sequences.next();
        let uuid = format::process_uuid(stream, process);
        let shown = ShownPids {
            pid: self.pids.pid(process),
            ppid: self.pids.ppid(process),
        };
        let mut packet = first_packet(sequence);
        packet.data = Some(pb::trace_packet::Data::TrackDescriptor(process_descriptor(
            stream, uuid, process, shown.pid,
        )));
        self.out.packet(&packet)?;
        if process.ppid != 0 {
            let mut packet = sequence_packet(sequence);
            let tree = process_tree(process, shown);
            packet.data = Some(pb::trace_packet::Data::ProcessTree(tree));
            self.out.packet(&packet)?;
        }
        let coder = StreamCoder::new(uuid, shown.pid, sequence, self.sequences.clone());
        self.streams.insert(
            stream,
            Box::new(StreamState {
                id: stream,
                info: process.clone(),
                shown_pid: shown.pid,
                clock: ClockState::default(),
                uuid,
                sequence,
                coder: Some(coder),
                first_ts_ns: None,
            }),
        );
        Ok(())
    }

    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        if let Some(coder) = self.coder(stream)? {
            coder.function(function);
        }
        Ok(())
    }

    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()> {
        if let Some(packet) = self.coder(stream)?.and_then(|c| c.thread(tid, name)) {
            self.out.packet(&packet)?;
        }
        Ok(())
    }

    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        self.events(stream, std::slice::from_ref(event))
    }

    fn events(&mut self, stream: StreamId, events: &[Event]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let state = note(&mut self.streams, &mut self.watermark_ns, stream, events)?;
        let Some(coder) = state.coder.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stream {}'s events come from its encoder", stream.0),
            ));
        };
        self.ends.clear();
        coder.events(events, &mut self.out.buf, &mut self.ends);
        self.out.written()
    }

    fn stream_encoder(&mut self, stream: StreamId) -> Option<Box<dyn StreamEncoder>> {
        let coder = self.streams.get_mut(stream)?.coder.take()?;
        Some(Box::new(Encoder::new(coder, self.spare.clone())))
    }

    fn recycle(&mut self, encoded: Encoded) {
        self.spare.give_back(encoded.bytes);
    }

    fn release_spare(&mut self) {
        self.spare.release();
        self.out.release_spare();
    }

    fn write_out(&mut self) -> io::Result<()> {
        self.out.write_out()
    }

    #[inline]
    fn encoded_events(&mut self, stream: StreamId, ts_ns: &[u64], bytes: &[u8]) -> io::Result<()> {
        let state = open_stream(&mut self.streams, stream)?;
        if let Some(&first) = ts_ns.first() {
            state.first_ts_ns.get_or_insert(first);
        }
        // A run of one thread's batch, in order (the merge clamps it).
        let newest = ts_ns.last().copied().unwrap_or(0);
        self.watermark_ns = self.watermark_ns.max(newest);
        self.out.append(bytes)
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
        let track = state.track();
        let mut packets = Vec::new();
        if state.clock.worth_describing() {
            packets.push(state.descriptor_packet());
        }
        packets.extend(end_packets(
            track,
            end,
            state.clock.jumps,
            first_ts_ns,
            ts_ns,
        ));
        self.streams.remove(stream);
        for packet in &packets {
            self.out.packet(packet)?;
        }
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.ensure_header()?;
        self.out.flush()
    }

    fn clock_offset(&mut self, stream: StreamId, offset: &ClockOffset) -> io::Result<()> {
        let state = open_stream(&mut self.streams, stream)?;
        let first_measure = offset.status != ClockStatus::Unmeasured
            && state
                .clock
                .offset
                .is_none_or(|o| o.status == ClockStatus::Unmeasured);
        let track = state.track();
        let mut packets = state.clock.offset_packets(track, offset);
        if first_measure {
            packets.push(state.descriptor_packet());
        }
        for packet in &packets {
            self.out.packet(packet)?;
        }
        Ok(())
    }

    fn clock_jump(&mut self, stream: StreamId, jump: &ClockJump) -> io::Result<()> {
        let state = open_stream(&mut self.streams, stream)?;
        let track = state.track();
        let packet = state.clock.jump_packet(track, jump);
        self.out.packet(&packet)
    }
}

/// The open streams' states, indexed by `StreamId` (dense, from 0): the
/// merge hands the writer a run of a few events at a time, often one, and
/// looks its stream up for each run; an index costs less than a hash. An
/// ended stream keeps an empty slot (one pointer).
#[derive(Default)]
struct Streams(Vec<Option<Box<StreamState>>>);

impl Streams {
    #[inline]
    fn get_mut(&mut self, stream: StreamId) -> Option<&mut StreamState> {
        self.0.get_mut(stream.0 as usize)?.as_deref_mut()
    }

    fn insert(&mut self, stream: StreamId, state: Box<StreamState>) {
        let at = stream.0 as usize;
        if self.0.len() <= at {
            self.0.resize_with(at + 1, || None);
        }
        self.0[at] = Some(state);
    }

    fn remove(&mut self, stream: StreamId) {
        if let Some(slot) = self.0.get_mut(stream.0 as usize) {
            *slot = None;
        }
    }
}

/// The stream's state, or an error naming a contract breach of the caller.
#[inline]
fn open_stream(streams: &mut Streams, stream: StreamId) -> io::Result<&mut StreamState> {
    streams.get_mut(stream).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "stream {} is not open (no process() yet, or ended)",
                stream.0
            ),
        )
    })
}

/// What the writer keeps per open stream.
struct StreamState {
    id: StreamId,
    info: ProcessInfo,
    /// The pid viewers are given (`export::pids`).
    shown_pid: u32,
    clock: ClockState,
    uuid: u64,
    /// The process sequence.
    sequence: u32,
    /// Encodes the stream's events; `None` once a `StreamEncoder` has it.
    coder: Option<StreamCoder>,
    first_ts_ns: Option<u64>,
}

impl StreamState {
    fn track(&self) -> ProcessTrack {
        ProcessTrack {
            sequence: self.sequence,
            uuid: self.uuid,
        }
    }

    /// The process track's descriptor again, its description now with the
    /// clock's lines (Perfetto keeps the last description of a track).
    fn descriptor_packet(&self) -> pb::TracePacket {
        let mut descriptor = process_descriptor(self.id, self.uuid, &self.info, self.shown_pid);
        let clock = format::describe_clock(self.clock.offset.as_ref(), self.clock.jumps);
        if let Some(text) = &mut descriptor.description {
            text.push('\n');
            text.push_str(&clock);
        }
        let mut packet = sequence_packet(self.sequence);
        packet.data = Some(pb::trace_packet::Data::TrackDescriptor(descriptor));
        packet
    }
}
