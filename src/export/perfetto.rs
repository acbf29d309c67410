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

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use crate::event::Kind;
use crate::read::Event;
use crate::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use crate::writer::FunctionInfo;

use super::perfetto_format::{self as format, pb, ArgName, Category};
use pb::track_event::{NameField, SourceLocationField, Type};

/// Bytes gathered before they are written to the output.
const BUFFER_BYTES: usize = 256 << 10;

/// Flow arrows attached to an instant (see `PerfettoWriter::flow_instant`).
/// Flow ids are global to the trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flows<'a> {
    /// Flows that start at (or pass through) the instant.
    pub flow_ids: &'a [u64],
    /// Flows that end at the instant.
    pub terminating_flow_ids: &'a [u64],
}

/// A `TimelineSink` that writes a Perfetto trace to `W` as it goes: memory
/// holds interning state and open-slice stacks, never the trace.
pub struct PerfettoWriter<W: Write> {
    out: Output<W>,
    streams: HashMap<StreamId, StreamState>,
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
            out: Output {
                out,
                buf: Vec::with_capacity(BUFFER_BYTES),
                bytes: 0,
            },
            streams: HashMap::new(),
            sequences: Sequences { next: 1 },
            header_written: false,
            watermark_ns: 0,
        }
    }

    /// Bytes of trace produced so far (written or still buffered).
    pub fn bytes(&self) -> u64 {
        self.out.bytes + self.out.buf.len() as u64
    }

    /// Writes what is buffered to the output and flushes it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The output, after `finish`.
    pub fn into_inner(self) -> W {
        self.out.out
    }

    /// An instant on thread `tid` of `stream`, in category `rtrace`, that
    /// starts or ends flow arrows (e.g. a message sent by one process and
    /// received by another). `flow_ids` and `terminating_flow_ids` are
    /// written unpacked, the only form Perfetto reads.
    pub fn flow_instant(
        &mut self,
        stream: StreamId,
        tid: u64,
        ts_ns: u64,
        name: &str,
        flows: Flows<'_>,
    ) -> io::Result<()> {
        let track_event = pb::TrackEvent {
            r#type: Some(Type::Instant as i32),
            name_field: Some(NameField::Name(name.to_owned())),
            categories: vec![format::RTRACE_CATEGORY.to_owned()],
            flow_ids: flows.flow_ids.to_vec(),
            terminating_flow_ids: flows.terminating_flow_ids.to_vec(),
            ..Default::default()
        };
        let thread = self.started_thread(stream, tid, ts_ns)?;
        let mut packet = thread.packet();
        thread.stamp(&mut packet, ts_ns);
        packet.data = Some(pb::trace_packet::Data::TrackEvent(track_event));
        self.out.packet(&packet)
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
            thread.start(&mut self.out, ts_ns, pid)?;
        }
        Ok(thread)
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
                threads: HashMap::new(),
                first_ts_ns: None,
            },
        );
        Ok(())
    }

    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        let state = open_stream(&mut self.streams, stream)?;
        // A function interned on some sequence keeps its first description:
        // Perfetto forbids redefining an interned id.
        state
            .functions
            .entry(function.id.0)
            .or_insert_with(|| function.clone());
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
        self.watermark_ns = self.watermark_ns.max(event.ts_ns);
        self.started_thread(stream, event.tid, event.ts_ns)?;
        let state = open_stream(&mut self.streams, stream)?;
        state.first_ts_ns.get_or_insert(event.ts_ns);
        let StreamState {
            functions, threads, ..
        } = state;
        let Some(thread) = threads.get_mut(&event.tid) else {
            return Ok(()); // started_thread just made it
        };
        let packet = thread.event_packet(event, functions);
        self.out.packet(&packet)
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
        let packets = end_packets(state, end, first_ts_ns, ts_ns);
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
    streams: &mut HashMap<StreamId, StreamState>,
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

/// The output with its buffer.
struct Output<W> {
    out: W,
    buf: Vec<u8>,
    /// Bytes handed to `out` so far.
    bytes: u64,
}

impl<W: Write> Output<W> {
    fn packet(&mut self, packet: &pb::TracePacket) -> io::Result<()> {
        format::append_packet(packet, &mut self.buf);
        if self.buf.len() >= BUFFER_BYTES {
            self.write_buffer()?;
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_buffer()?;
        self.out.flush()
    }
}

/// What the writer keeps per open stream.
struct StreamState {
    uuid: u64,
    pid: u32,
    /// The process sequence.
    sequence: u32,
    functions: HashMap<u32, FunctionInfo>,
    threads: HashMap<u64, ThreadTrack>,
    first_ts_ns: Option<u64>,
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

/// An open slice on a thread: which function, called as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    function: u32,
    category: Category,
}

/// A thread's track and sequence.
struct ThreadTrack {
    sequence: u32,
    uuid: u64,
    process_uuid: u64,
    tid: u64,
    name: String,
    started: bool,
    /// Value of the incremental clock after the last packet that used it.
    clock_ns: u64,
    /// Functions whose name and source location are interned.
    functions: HashSet<u32>,
    /// `Category::bit`s and `ArgName::bit`s already interned.
    interned: u8,
    /// Open slices, innermost last, as Perfetto will nest them.
    stack: Vec<Frame>,
}

impl ThreadTrack {
    fn new(sequence: u32, process_uuid: u64, tid: u64) -> Self {
        ThreadTrack {
            sequence,
            uuid: format::child_uuid(process_uuid, &tid.to_le_bytes()),
            process_uuid,
            tid,
            name: String::new(),
            started: false,
            clock_ns: 0,
            functions: HashSet::new(),
            interned: 0,
            stack: Vec::new(),
        }
    }

    /// Writes the sequence's first packet (defaults and clocks) and the
    /// thread's descriptor.
    fn start<W: Write>(&mut self, out: &mut Output<W>, ts_ns: u64, pid: u32) -> io::Result<()> {
        self.started = true;
        self.clock_ns = ts_ns;
        let mut packet = first_packet(self.sequence);
        packet.trace_packet_defaults = Some(pb::TracePacketDefaults {
            timestamp_clock_id: Some(format::CLOCK_INCREMENTAL),
            track_event_defaults: Some(pb::TrackEventDefaults {
                track_uuid: Some(self.uuid),
            }),
        });
        packet.data = Some(pb::trace_packet::Data::ClockSnapshot(clock_snapshot(
            ts_ns, true,
        )));
        out.packet(&packet)?;
        out.packet(&self.descriptor_packet(pid))
    }

    fn descriptor_packet(&self, pid: u32) -> pb::TracePacket {
        let mut packet = self.packet();
        packet.data = Some(pb::trace_packet::Data::TrackDescriptor(
            pb::TrackDescriptor {
                uuid: Some(self.uuid),
                parent_uuid: Some(self.process_uuid),
                thread: Some(pb::ThreadDescriptor {
                    pid: Some(pid as i32),
                    tid: Some(self.tid as i64),
                    thread_name: (!self.name.is_empty()).then(|| self.name.clone()),
                }),
                ..Default::default()
            },
        ));
        packet
    }

    /// An empty packet on this sequence.
    fn packet(&self) -> pb::TracePacket {
        sequence_packet(self.sequence)
    }

    /// Sets the packet's timestamp: a delta of the incremental clock, or
    /// absolute CLOCK_MONOTONIC for an event older than the clock.
    fn stamp(&mut self, packet: &mut pb::TracePacket, ts_ns: u64) {
        if ts_ns >= self.clock_ns {
            packet.timestamp = Some(ts_ns - self.clock_ns);
            self.clock_ns = ts_ns;
        } else {
            packet.timestamp = Some(ts_ns);
            packet.timestamp_clock_id = Some(format::CLOCK_MONOTONIC);
        }
    }

    fn event_packet(
        &mut self,
        event: &Event,
        functions: &HashMap<u32, FunctionInfo>,
    ) -> pb::TracePacket {
        let mut interned = pb::InternedData::default();
        let mut track_event = pb::TrackEvent::default();
        let function = event.function.0;
        let category = if matches!(event.kind, Kind::CCall | Kind::CReturn) {
            Category::C
        } else {
            Category::Python
        };
        let frame = Frame { function, category };
        match event.kind {
            Kind::Call | Kind::CCall => {
                let iid = self.intern_function(function, functions, &mut interned);
                track_event.r#type = Some(Type::SliceBegin as i32);
                track_event.name_field = Some(NameField::NameIid(iid));
                track_event.category_iids = vec![self.intern_category(category, &mut interned)];
                if functions.get(&function).is_some_and(|f| !f.file.is_empty()) {
                    track_event.source_location_field =
                        Some(SourceLocationField::SourceLocationIid(iid));
                }
                self.stack.push(frame);
            }
            Kind::Return | Kind::Exception | Kind::CReturn => {
                track_event.r#type = Some(Type::SliceEnd as i32);
                if !self.close(frame) {
                    // Not the innermost open slice: name it, so that the
                    // reader (and Perfetto) know which one it ends.
                    let iid = self.intern_function(function, functions, &mut interned);
                    track_event.name_field = Some(NameField::NameIid(iid));
                    track_event.category_iids = vec![self.intern_category(category, &mut interned)];
                }
                if event.kind == Kind::Exception {
                    let name = self.intern_arg(ArgName::Exception, &mut interned);
                    track_event.debug_annotations = vec![annotation(
                        name,
                        pb::debug_annotation::Value::BoolValue(true),
                    )];
                }
            }
            Kind::Line => {
                let iid = self.intern_function(function, functions, &mut interned);
                track_event.r#type = Some(Type::Instant as i32);
                track_event.name_field = Some(NameField::NameIid(iid));
                track_event.category_iids = vec![self.intern_category(category, &mut interned)];
                let name = self.intern_arg(ArgName::Line, &mut interned);
                track_event.debug_annotations = vec![annotation(
                    name,
                    pb::debug_annotation::Value::UintValue(u64::from(event.line)),
                )];
            }
        }
        let mut packet = self.packet();
        self.stamp(&mut packet, event.ts_ns);
        if interned != pb::InternedData::default() {
            packet.interned_data = Some(interned);
        }
        packet.data = Some(pb::trace_packet::Data::TrackEvent(track_event));
        packet
    }

    /// Pops `frame` if it is the innermost open slice (true). Otherwise
    /// drops it and the slices inside it, if it is open at all (false).
    fn close(&mut self, frame: Frame) -> bool {
        match self.stack.iter().rposition(|open| *open == frame) {
            Some(i) if i + 1 == self.stack.len() => {
                self.stack.pop();
                true
            }
            Some(i) => {
                self.stack.truncate(i);
                false
            }
            None => false,
        }
    }

    fn intern_function(
        &mut self,
        function: u32,
        functions: &HashMap<u32, FunctionInfo>,
        interned: &mut pb::InternedData,
    ) -> u64 {
        let iid = u64::from(function) + 1;
        if self.functions.insert(function) {
            let (name, location) = match functions.get(&function) {
                Some(info) => (info.name.clone(), source_location(iid, info)),
                None => {
                    // The merge promised the function first; do not fail the
                    // whole trace over it.
                    let name = format!("<function {function}>");
                    let location = pb::SourceLocation {
                        iid: Some(iid),
                        function_name: Some(name.clone()),
                        ..Default::default()
                    };
                    (name, location)
                }
            };
            interned.event_names.push(pb::EventName {
                iid: Some(iid),
                name: Some(name),
            });
            interned.source_locations.push(location);
        }
        iid
    }

    fn intern_category(&mut self, category: Category, interned: &mut pb::InternedData) -> u64 {
        if self.interned & category.bit() == 0 {
            self.interned |= category.bit();
            interned.event_categories.push(pb::EventCategory {
                iid: Some(category.iid()),
                name: Some(category.name().to_owned()),
            });
        }
        category.iid()
    }

    fn intern_arg(&mut self, arg: ArgName, interned: &mut pb::InternedData) -> u64 {
        if self.interned & arg.bit() == 0 {
            self.interned |= arg.bit();
            interned
                .debug_annotation_names
                .push(pb::DebugAnnotationName {
                    iid: Some(arg.iid()),
                    name: Some(arg.name().to_owned()),
                });
        }
        arg.iid()
    }
}

/// A function's source location: its file, `module.qualname` (the reader
/// takes the module back from it) and first line.
fn source_location(iid: u64, info: &FunctionInfo) -> pb::SourceLocation {
    let function_name = if info.module.is_empty() {
        info.name.clone()
    } else {
        format!("{}.{}", info.module, info.name)
    };
    pb::SourceLocation {
        iid: Some(iid),
        file_name: (!info.file.is_empty()).then(|| info.file.clone()),
        function_name: Some(function_name),
        line_number: (info.line != 0).then_some(info.line),
    }
}

fn annotation(name_iid: u64, value: pb::debug_annotation::Value) -> pb::DebugAnnotation {
    pb::DebugAnnotation {
        name_field: Some(pb::debug_annotation::NameField::NameIid(name_iid)),
        value: Some(value),
    }
}

fn named_annotation(name: &str, value: pb::debug_annotation::Value) -> pb::DebugAnnotation {
    pb::DebugAnnotation {
        name_field: Some(pb::debug_annotation::NameField::Name(name.to_owned())),
        value: Some(value),
    }
}

fn sequence_packet(sequence: u32) -> pb::TracePacket {
    pb::TracePacket {
        trusted_packet_sequence_id: Some(sequence),
        ..Default::default()
    }
}

/// The first packet of a sequence: it clears incremental state.
fn first_packet(sequence: u32) -> pb::TracePacket {
    pb::TracePacket {
        trusted_packet_sequence_id: Some(sequence),
        first_packet_on_sequence: Some(true),
        sequence_flags: Some(format::SEQ_INCREMENTAL_STATE_CLEARED),
        ..Default::default()
    }
}

/// A snapshot reading CLOCK_MONOTONIC at `ts_ns` (and the sequence's
/// incremental clock at the same value, if `incremental`), naming
/// CLOCK_MONOTONIC the trace's clock.
fn clock_snapshot(ts_ns: u64, incremental: bool) -> pb::ClockSnapshot {
    let mut clocks = vec![pb::clock_snapshot::Clock {
        clock_id: Some(format::CLOCK_MONOTONIC),
        timestamp: Some(ts_ns),
        is_incremental: None,
    }];
    if incremental {
        clocks.push(pb::clock_snapshot::Clock {
            clock_id: Some(format::CLOCK_INCREMENTAL),
            timestamp: Some(ts_ns),
            is_incremental: Some(true),
        });
    }
    pb::ClockSnapshot {
        clocks,
        primary_trace_clock: Some(pb::BuiltinClock::Monotonic as i32),
    }
}

fn process_descriptor(stream: StreamId, uuid: u64, info: &ProcessInfo) -> pb::TrackDescriptor {
    pb::TrackDescriptor {
        uuid: Some(uuid),
        description: Some(format::describe_process(stream, info)),
        process: Some(pb::ProcessDescriptor {
            pid: Some(info.pid as i32),
            cmdline: info.argv.clone(),
            process_name: Some(info.display_name()),
            process_labels: vec![format::host_label(&info.host)],
        }),
        ..Default::default()
    }
}

/// The process's `ProcessTree` entry. Its cmdline has at least two entries,
/// so Perfetto takes the first whole as the process name.
fn process_tree(info: &ProcessInfo) -> pb::ProcessTree {
    let mut cmdline = vec![info.display_name()];
    cmdline.extend(info.argv.iter().cloned());
    if cmdline.len() == 1 {
        cmdline.push(String::new());
    }
    pb::ProcessTree {
        processes: vec![pb::process_tree::Process {
            pid: Some(info.pid as i32),
            ppid: Some(info.ppid as i32),
            cmdline,
        }],
    }
}

/// The packets that close a stream: the end instant and, if events were
/// lost, the lost-events counter.
fn end_packets(
    state: &StreamState,
    end: &StreamEnd,
    first_ts_ns: u64,
    ts_ns: u64,
) -> Vec<pb::TracePacket> {
    use pb::debug_annotation::Value;
    let absolute = |ts: u64, data| pb::TracePacket {
        timestamp: Some(ts),
        timestamp_clock_id: Some(format::CLOCK_MONOTONIC),
        data: Some(data),
        ..sequence_packet(state.sequence)
    };
    let name = if end.truncated {
        format::END_TRUNCATED
    } else {
        format::END_CLEAN
    };
    let instant = pb::TrackEvent {
        r#type: Some(Type::Instant as i32),
        track_uuid: Some(state.uuid),
        name_field: Some(NameField::Name(name.to_owned())),
        categories: vec![format::RTRACE_CATEGORY.to_owned()],
        debug_annotations: vec![
            named_annotation(format::END_ARG_EVENTS, Value::UintValue(end.events)),
            named_annotation(format::END_ARG_LOST, Value::UintValue(end.lost)),
            named_annotation(format::END_ARG_TRUNCATED, Value::BoolValue(end.truncated)),
        ],
        ..Default::default()
    };
    let mut packets = vec![absolute(ts_ns, pb::trace_packet::Data::TrackEvent(instant))];
    if end.lost == 0 {
        return packets;
    }
    let uuid = format::child_uuid(state.uuid, b"lost");
    packets.push(pb::TracePacket {
        data: Some(pb::trace_packet::Data::TrackDescriptor(
            pb::TrackDescriptor {
                uuid: Some(uuid),
                parent_uuid: Some(state.uuid),
                name: Some(format::LOST_TRACK_NAME.to_owned()),
                counter: Some(pb::CounterDescriptor {
                    unit: Some(pb::counter_descriptor::Unit::Count as i32),
                }),
                ..Default::default()
            },
        )),
        ..sequence_packet(state.sequence)
    });
    let lost = i64::try_from(end.lost).unwrap_or(i64::MAX);
    let times = if first_ts_ns < ts_ns {
        vec![first_ts_ns, ts_ns]
    } else {
        vec![ts_ns]
    };
    for ts in times {
        let counter = pb::TrackEvent {
            r#type: Some(Type::Counter as i32),
            track_uuid: Some(uuid),
            counter_value_field: Some(pb::track_event::CounterValueField::CounterValue(lost)),
            ..Default::default()
        };
        packets.push(absolute(ts, pb::trace_packet::Data::TrackEvent(counter)));
    }
    packets
}
