//! What the reader keeps while it reads: per process (functions, thread
//! names, open slices, end) and per packet sequence (interned data, default
//! track, incremental clock), and how a thread's track event turns back into
//! an rtrace event.

use std::collections::BTreeMap;

use crate::event::{FunctionId, Kind};
use crate::idmap::IdMap;
use crate::mark::{Arg, ArgValue, Mark};
use crate::read::Event;
use crate::timeline::{ProcessInfo, StreamEnd, StreamId};
use crate::writer::FunctionInfo;

use super::super::perfetto_format::{self as format, pb, ArgName, Category};
use pb::debug_annotation::{NameField as ArgNameField, Value};
use pb::track_event::{NameField, Type};

/// Who a track belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Owner {
    Process(StreamId),
    Thread(StreamId, u64),
    /// The track of a user counter of a process, by its name's id.
    Counter(StreamId, u32),
    /// Another track of a process (the lost-events counter).
    Other(StreamId),
}

impl Owner {
    pub(super) fn stream(&self) -> StreamId {
        match *self {
            Owner::Process(s) | Owner::Thread(s, _) | Owner::Counter(s, _) | Owner::Other(s) => s,
        }
    }
}

/// An open slice: which function, called as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    function: u32,
    category: Category,
}

/// A thread event read back, and whether its function was new.
pub(super) struct Decoded {
    pub event: Event,
    pub new_function: bool,
}

/// What is known about one process.
pub(super) struct StreamData {
    pub info: ProcessInfo,
    /// The pid viewers were given, which `ProcessTree` entries carry.
    pub shown_pid: u32,
    pub functions: IdMap<u32, FunctionInfo>,
    pub threads: BTreeMap<u64, String>,
    pub end: Option<StreamEnd>,
    /// Open slices per thread.
    stacks: IdMap<u64, Vec<Frame>>,
}

impl StreamData {
    pub(super) fn new(info: ProcessInfo, shown_pid: u32) -> Self {
        StreamData {
            info,
            shown_pid,
            functions: IdMap::default(),
            threads: BTreeMap::new(),
            end: None,
            stacks: IdMap::default(),
        }
    }

    /// Turns a track event of thread `tid` back into an rtrace event;
    /// `None` for events rtrace did not write as events (flow instants).
    pub(super) fn thread_event(
        &mut self,
        sequence: &Sequence,
        tid: u64,
        ts_ns: u64,
        event: &pb::TrackEvent,
    ) -> Result<Option<Decoded>, String> {
        let mut new_function = false;
        let named = match (event.name_field.as_ref(), sequence.category(event)) {
            (Some(NameField::NameIid(iid)), Some(category)) => {
                let (function, new) = self.function(sequence, *iid, category)?;
                new_function = new;
                Some(Frame { function, category })
            }
            _ => None,
        };
        let kind = Type::try_from(event.r#type.unwrap_or(0)).ok();
        let stack = self.stacks.entry(tid).or_default();
        let (kind, frame, line) = match (kind, named) {
            (Some(Type::SliceBegin), Some(frame)) => {
                stack.push(frame);
                (begin_kind(frame), frame, 0)
            }
            (Some(Type::SliceEnd), named) => {
                let frame = close(stack, named).ok_or("a slice end without an open slice")?;
                let exception = sequence.flag(event, ArgName::Exception);
                (end_kind(frame, exception), frame, 0)
            }
            (Some(Type::Instant), Some(frame)) if frame.category == Category::User => {
                let kind = if !event.flow_ids.is_empty() {
                    Kind::FlowOut
                } else if !event.terminating_flow_ids.is_empty() {
                    Kind::FlowIn
                } else {
                    Kind::Instant
                };
                (kind, frame, 0)
            }
            (Some(Type::Instant), Some(frame)) => match sequence.uint_arg(event, ArgName::Line) {
                Some(line) => (Kind::Line, frame, line as u32),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let mark = kind.has_payload().then(|| {
            let flow_id = event
                .flow_ids
                .first()
                .or(event.terminating_flow_ids.first())
                .copied()
                .unwrap_or(0);
            Box::new(Mark {
                flow_id,
                value: 0.0,
                args: user_args(event),
            })
        });
        let text = match kind {
            Kind::Call => text_arg(event, format::ARG_CALL_ARGS),
            Kind::Return => text_arg(event, format::ARG_RETURN),
            _ => None,
        };
        let event = Event {
            ts_ns,
            tid,
            kind,
            function: FunctionId(frame.function),
            line,
            mark,
            text,
        };
        Ok(Some(Decoded {
            event,
            new_function,
        }))
    }

    /// The function a `name_iid` names (interned on `sequence`), and
    /// whether this is its first use in the process.
    fn function(
        &mut self,
        sequence: &Sequence,
        iid: u64,
        category: Category,
    ) -> Result<(u32, bool), String> {
        let id = iid
            .checked_sub(1)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("event name id {iid} is not a function id + 1"))?;
        if self.functions.contains_key(&id) {
            return Ok((id, false));
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
        Ok((id, true))
    }
}

impl StreamData {
    /// A user counter's name, from its track, as a function of the
    /// process; true if it was not known yet.
    pub(super) fn counter_name(&mut self, id: u32, name: &str) -> bool {
        if self.functions.contains_key(&id) {
            return false;
        }
        let info = FunctionInfo {
            id: FunctionId(id),
            name: name.to_owned(),
            module: String::new(),
            file: String::new(),
            line: 0,
            native: false,
        };
        self.functions.insert(id, info);
        true
    }
}

/// The arguments of a user event, from its inline-named annotations.
fn user_args(event: &pb::TrackEvent) -> Vec<Arg> {
    event
        .debug_annotations
        .iter()
        .filter_map(|a| {
            let Some(ArgNameField::Name(key)) = &a.name_field else {
                return None;
            };
            let value = match a.value.as_ref()? {
                Value::BoolValue(v) => ArgValue::Bool(*v),
                Value::UintValue(v) => ArgValue::Int(*v as i64),
                Value::IntValue(v) => ArgValue::Int(*v),
                Value::DoubleValue(v) => ArgValue::Float(*v),
                Value::StringValue(v) => ArgValue::Str(v.clone()),
            };
            Some(Arg {
                key: key.clone(),
                value,
            })
        })
        .collect()
}

/// A string argument written with its name inline (`log_args` texts).
fn text_arg(event: &pb::TrackEvent, name: &str) -> Option<std::sync::Arc<str>> {
    event
        .debug_annotations
        .iter()
        .find_map(|a| match (&a.name_field, &a.value) {
            (Some(ArgNameField::Name(n)), Some(Value::StringValue(v))) if n == name => {
                Some(std::sync::Arc::from(v.as_str()))
            }
            _ => None,
        })
}

fn begin_kind(frame: Frame) -> Kind {
    match frame.category {
        Category::C => Kind::CCall,
        Category::Python => Kind::Call,
        Category::User => Kind::SpanBegin,
    }
}

fn end_kind(frame: Frame, exception: bool) -> Kind {
    match frame.category {
        Category::C => Kind::CReturn,
        Category::User => Kind::SpanEnd,
        Category::Python if exception => Kind::Exception,
        Category::Python => Kind::Return,
    }
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

/// The incremental state of one packet sequence.
#[derive(Default)]
pub(super) struct Sequence {
    /// The process whose sequence this is (for its process tree).
    pub stream: Option<StreamId>,
    pub default_clock: Option<u32>,
    pub default_track: Option<u64>,
    /// Current value of the incremental clock, once a snapshot set it.
    clock_ns: Option<u64>,
    names: IdMap<u64, String>,
    locations: IdMap<u64, pb::SourceLocation>,
    categories: IdMap<u64, String>,
    arg_names: IdMap<u64, String>,
}

impl Sequence {
    pub(super) fn intern(&mut self, interned: pb::InternedData) {
        for name in interned.event_names {
            let text = name.name.unwrap_or_default();
            self.names.insert(name.iid.unwrap_or(0), text);
        }
        for location in interned.source_locations {
            self.locations.insert(location.iid.unwrap_or(0), location);
        }
        for category in interned.event_categories {
            let text = category.name.unwrap_or_default();
            self.categories.insert(category.iid.unwrap_or(0), text);
        }
        for arg in interned.debug_annotation_names {
            let text = arg.name.unwrap_or_default();
            self.arg_names.insert(arg.iid.unwrap_or(0), text);
        }
    }

    pub(super) fn clocks(&mut self, snapshot: &pb::ClockSnapshot) {
        for clock in &snapshot.clocks {
            if clock.clock_id == Some(format::CLOCK_INCREMENTAL) {
                self.clock_ns = clock.timestamp;
            }
        }
    }

    /// A packet's timestamp in CLOCK_MONOTONIC ns.
    pub(super) fn timestamp(
        &mut self,
        ts: Option<u64>,
        clock: Option<u32>,
    ) -> Result<Option<u64>, String> {
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
