//! One thread's track and packet sequence: the interning state, the
//! incremental clock and the stack of open slices, and the encoding of the
//! thread's events into packets.

mod hot;

pub(super) use hot::HotEvent;

use std::collections::HashMap;

use crate::event::Kind;
use crate::idmap::IdSet;
use crate::mark::{Arg, ArgValue};
use crate::read::Event;
use crate::writer::FunctionInfo;

use super::super::perfetto_format::{self as format, pb, ArgName, Category};
use super::packets::{clock_snapshot, first_packet, sequence_packet};
use pb::debug_annotation::{NameField as ArgNameField, Value};
use pb::track_event::{NameField, SourceLocationField, Type};

/// An open slice on a thread: which function, called as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    function: u32,
    category: Category,
}

/// A thread's track and sequence.
pub(super) struct ThreadTrack {
    sequence: u32,
    uuid: u64,
    process_uuid: u64,
    tid: u64,
    pub(super) name: String,
    pub(super) started: bool,
    /// Value of the incremental clock after the last packet that used it.
    clock_ns: u64,
    /// Functions whose name and source location are interned.
    functions: IdSet,
    /// `Category::bit`s and `ArgName::bit`s already interned.
    interned: u8,
    /// Open slices, innermost last, as Perfetto will nest them.
    stack: Vec<Frame>,
}

impl ThreadTrack {
    pub(super) fn new(sequence: u32, process_uuid: u64, tid: u64) -> Self {
        ThreadTrack {
            sequence,
            uuid: format::child_uuid(process_uuid, &tid.to_le_bytes()),
            process_uuid,
            tid,
            name: String::new(),
            started: false,
            clock_ns: 0,
            functions: IdSet::default(),
            interned: 0,
            stack: Vec::new(),
        }
    }

    /// The packets that start the sequence at `ts_ns`: defaults and clocks,
    /// then the thread's descriptor.
    pub(super) fn start(&mut self, ts_ns: u64, pid: u32) -> [pb::TracePacket; 2] {
        self.started = true;
        self.clock_ns = ts_ns;
        let mut packet = first_packet(self.sequence);
        packet.trace_packet_defaults = Some(pb::TracePacketDefaults {
            timestamp_clock_id: Some(format::CLOCK_INCREMENTAL),
            track_event_defaults: Some(pb::TrackEventDefaults {
                track_uuid: Some(self.uuid),
            }),
        });
        let snapshot = clock_snapshot(ts_ns, true);
        packet.data = Some(pb::trace_packet::Data::ClockSnapshot(snapshot));
        [packet, self.descriptor_packet(pid)]
    }

    /// The thread's track descriptor (again, after a rename).
    pub(super) fn descriptor_packet(&self, pid: u32) -> pb::TracePacket {
        let descriptor = pb::TrackDescriptor {
            uuid: Some(self.uuid),
            parent_uuid: Some(self.process_uuid),
            thread: Some(pb::ThreadDescriptor {
                pid: Some(pid as i32),
                tid: Some(self.tid as i64),
                thread_name: (!self.name.is_empty()).then(|| self.name.clone()),
            }),
            ..Default::default()
        };
        let mut packet = sequence_packet(self.sequence);
        packet.data = Some(pb::trace_packet::Data::TrackDescriptor(descriptor));
        packet
    }

    /// A packet on this sequence at `ts_ns` carrying `event`.
    pub(super) fn event_packet(
        &mut self,
        ts_ns: u64,
        event: pb::TrackEvent,
        interned: pb::InternedData,
    ) -> pb::TracePacket {
        let mut packet = sequence_packet(self.sequence);
        match self.timestamp(ts_ns) {
            Timestamp::Delta(delta) => packet.timestamp = Some(delta),
            Timestamp::Absolute(ts_ns) => {
                packet.timestamp = Some(ts_ns);
                packet.timestamp_clock_id = Some(format::CLOCK_MONOTONIC);
            }
        }
        if interned != pb::InternedData::default() {
            packet.interned_data = Some(interned);
        }
        packet.data = Some(pb::trace_packet::Data::TrackEvent(event));
        packet
    }

    /// The timestamp of a packet at `ts_ns`, which then advances the
    /// incremental clock to it. An event older than the clock (a late one)
    /// is stamped absolute, so the clock never has to go back.
    fn timestamp(&mut self, ts_ns: u64) -> Timestamp {
        if ts_ns >= self.clock_ns {
            let delta = ts_ns - self.clock_ns;
            self.clock_ns = ts_ns;
            Timestamp::Delta(delta)
        } else {
            Timestamp::Absolute(ts_ns)
        }
    }

    /// The packet of one event of this thread.
    pub(super) fn encode(
        &mut self,
        event: &Event,
        functions: &HashMap<u32, FunctionInfo>,
    ) -> pb::TracePacket {
        let mut interned = pb::InternedData::default();
        let mut intern = Interning {
            thread: self,
            functions,
            out: &mut interned,
        };
        let track_event = match event.kind {
            Kind::Call | Kind::CCall => intern.begin(event),
            Kind::Return | Kind::Exception | Kind::CReturn | Kind::SpanEnd => intern.end(event),
            Kind::Line => intern.line(event),
            Kind::SpanBegin => intern.span_begin(event),
            Kind::Instant | Kind::FlowOut | Kind::FlowIn => intern.instant(event),
            Kind::Counter => counter_event(event),
        };
        self.event_packet(event.ts_ns, track_event, interned)
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
}

/// A packet's timestamp: a delta of the sequence's incremental clock, or
/// absolute CLOCK_MONOTONIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timestamp {
    Delta(u64),
    Absolute(u64),
}

/// Builds one event's `TrackEvent`, interning what it uses for the first
/// time on the sequence into `out`.
struct Interning<'a> {
    thread: &'a mut ThreadTrack,
    functions: &'a HashMap<u32, FunctionInfo>,
    out: &'a mut pb::InternedData,
}

impl Interning<'_> {
    /// `call`/`c_call`: a slice begin, with its source location if the
    /// function has a file.
    fn begin(&mut self, event: &Event) -> pb::TrackEvent {
        let frame = frame_of(event);
        self.thread.stack.push(frame);
        let mut track_event = self.named(frame, Type::SliceBegin);
        let has_file = self
            .functions
            .get(&frame.function)
            .is_some_and(|f| !f.file.is_empty());
        if has_file {
            let iid = u64::from(frame.function) + 1;
            track_event.source_location_field = Some(SourceLocationField::SourceLocationIid(iid));
        }
        add_text(&mut track_event, format::ARG_CALL_ARGS, event);
        track_event
    }

    /// `return`/`c_return`/`exception`: a bare slice end when it ends the
    /// innermost slice; otherwise it names the slice it ends, so that the
    /// reader (and Perfetto) know which.
    fn end(&mut self, event: &Event) -> pb::TrackEvent {
        let frame = frame_of(event);
        let mut track_event = if self.thread.close(frame) {
            pb::TrackEvent {
                r#type: Some(Type::SliceEnd as i32),
                ..Default::default()
            }
        } else {
            self.named(frame, Type::SliceEnd)
        };
        if event.kind == Kind::Exception {
            let arg = self.arg(ArgName::Exception, Value::BoolValue(true));
            track_event.debug_annotations = vec![arg];
        }
        add_text(&mut track_event, format::ARG_RETURN, event);
        track_event
    }

    /// A user span's begin, with its arguments.
    fn span_begin(&mut self, event: &Event) -> pb::TrackEvent {
        let frame = frame_of(event);
        self.thread.stack.push(frame);
        let mut track_event = self.named(frame, Type::SliceBegin);
        track_event.debug_annotations = user_args(event);
        track_event
    }

    /// A user instant, or a flow's end (a send starts the arrow, a receive
    /// ends it), with its arguments.
    fn instant(&mut self, event: &Event) -> pb::TrackEvent {
        let mut track_event = self.named(frame_of(event), Type::Instant);
        track_event.debug_annotations = user_args(event);
        let flow = event.mark.as_ref().map_or(0, |m| m.flow_id);
        match event.kind {
            Kind::FlowOut => track_event.flow_ids = vec![flow],
            Kind::FlowIn => track_event.terminating_flow_ids = vec![flow],
            _ => {}
        }
        track_event
    }

    /// `line`: an instant named after the function, with the line number.
    fn line(&mut self, event: &Event) -> pb::TrackEvent {
        let mut track_event = self.named(frame_of(event), Type::Instant);
        let line = u64::from(event.line);
        track_event.debug_annotations = vec![self.arg(ArgName::Line, Value::UintValue(line))];
        track_event
    }

    /// An event of `kind` named after the frame's function, in its category.
    fn named(&mut self, frame: Frame, kind: Type) -> pb::TrackEvent {
        pb::TrackEvent {
            r#type: Some(kind as i32),
            name_field: Some(NameField::NameIid(self.function(frame.function))),
            category_iids: vec![self.category(frame.category)],
            ..Default::default()
        }
    }

    /// The function's interning id (`EventName` and `SourceLocation`).
    fn function(&mut self, function: u32) -> u64 {
        let iid = u64::from(function) + 1;
        if !self.thread.functions.insert(function) {
            return iid;
        }
        let (name, location) = match self.functions.get(&function) {
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
        self.out.event_names.push(pb::EventName {
            iid: Some(iid),
            name: Some(name),
        });
        self.out.source_locations.push(location);
        iid
    }

    fn category(&mut self, category: Category) -> u64 {
        if self.thread.interned & category.bit() == 0 {
            self.thread.interned |= category.bit();
            self.out.event_categories.push(pb::EventCategory {
                iid: Some(category.iid()),
                name: Some(category.name().to_owned()),
            });
        }
        category.iid()
    }

    /// An argument with an interned name.
    fn arg(&mut self, arg: ArgName, value: Value) -> pb::DebugAnnotation {
        if self.thread.interned & arg.bit() == 0 {
            self.thread.interned |= arg.bit();
            self.out
                .debug_annotation_names
                .push(pb::DebugAnnotationName {
                    iid: Some(arg.iid()),
                    name: Some(arg.name().to_owned()),
                });
        }
        pb::DebugAnnotation {
            name_field: Some(ArgNameField::NameIid(arg.iid())),
            value: Some(value),
        }
    }
}

/// A counter's new value; the caller puts it on the counter's track.
fn counter_event(event: &Event) -> pb::TrackEvent {
    pb::TrackEvent {
        r#type: Some(Type::Counter as i32),
        counter_value_field: Some(pb::track_event::CounterValueField::DoubleCounterValue(
            event.mark.as_ref().map_or(0.0, |m| m.value),
        )),
        ..Default::default()
    }
}

/// A user event's arguments, as debug annotations named inline.
fn user_args(event: &Event) -> Vec<pb::DebugAnnotation> {
    let Some(mark) = &event.mark else {
        return Vec::new();
    };
    mark.args
        .iter()
        .map(|Arg { key, value }| pb::DebugAnnotation {
            name_field: Some(ArgNameField::Name(key.clone())),
            value: Some(match value {
                ArgValue::Int(v) => Value::IntValue(*v),
                ArgValue::Float(v) => Value::DoubleValue(*v),
                ArgValue::Str(v) => Value::StringValue(v.clone()),
                ArgValue::Bool(v) => Value::BoolValue(*v),
            }),
        })
        .collect()
}

/// Adds the event's `log_args` text, if any, as the argument `name`.
fn add_text(track_event: &mut pb::TrackEvent, name: &str, event: &Event) {
    if let Some(text) = &event.text {
        track_event.debug_annotations.push(pb::DebugAnnotation {
            name_field: Some(ArgNameField::Name(name.to_owned())),
            value: Some(Value::StringValue(text.to_string())),
        });
    }
}

/// The slice an event opens or closes.
fn frame_of(event: &Event) -> Frame {
    Frame::of(event.kind, event.function.0)
}

impl Frame {
    /// The slice an event of `kind` of `function` opens or closes.
    #[inline]
    fn of(kind: Kind, function: u32) -> Frame {
        // A load, where a `match` on the kind took about ten instructions
        // an event on the hot path.
        let category = CATEGORY_OF_KIND[kind as usize & (CATEGORY_OF_KIND.len() - 1)];
        Frame { function, category }
    }
}

/// Each kind's category, by the kind's raw value.
const CATEGORY_OF_KIND: [Category; 1 << Kind::BITS] = {
    let mut table = [Category::Python; 1 << Kind::BITS];
    let mut raw = 0;
    while raw < table.len() {
        if Kind::MARKS & (1 << raw) != 0 {
            table[raw] = Category::User;
        }
        raw += 1;
    }
    table[Kind::CCall as usize] = Category::C;
    table[Kind::CReturn as usize] = Category::C;
    table
};

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The table gives each kind the category its events are shown under:
    /// C calls and returns, user events, and Python for the rest.
    #[test]
    fn each_kind_has_its_category() {
        let kinds: Vec<Kind> = (0..16).filter_map(Kind::from_wire).collect();
        assert_eq!(kinds.len(), 12);
        for kind in kinds {
            let expected = match kind {
                Kind::CCall | Kind::CReturn => Category::C,
                Kind::SpanBegin
                | Kind::SpanEnd
                | Kind::Instant
                | Kind::Counter
                | Kind::FlowOut
                | Kind::FlowIn => Category::User,
                Kind::Call | Kind::Return | Kind::Exception | Kind::Line => Category::Python,
            };
            assert_eq!(Frame::of(kind, 7).category, expected, "{kind:?}");
        }
    }
}
