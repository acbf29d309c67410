//! The packets of the common events written by hand: slice begins and ends
//! of calls, and line instants, once everything they name is interned on
//! the sequence. Building a prost `TracePacket` per event (and its nested
//! messages, with their vectors) cost more than all the rest of the
//! collector's work on an event; these packets are a dozen bytes.
//!
//! The bytes are exactly what prost writes for the packet that
//! `ThreadTrack::encode` builds for the same event in the same state
//! (prost writes fields in field-number order, a `oneof` at its lowest
//! number): the unit tests below compare the two encoders on every case.

use crate::event::Kind;
use crate::idmap::IdSet;
use crate::read::Event;
use crate::varint::PutBytes;

use super::super::super::perfetto_format::{self as format, ArgName, PACKET_TAG};
use super::{Frame, ThreadTrack, Timestamp};

/// `TrackEvent.Type` values.
const SLICE_BEGIN: u8 = 1;
const SLICE_END: u8 = 2;
const INSTANT: u8 = 3;

/// Field keys (field number << 3 | wire type).
const TRACE_PACKET_TIMESTAMP: u8 = 0x40; // 8, varint
const TRACE_PACKET_SEQUENCE_ID: u8 = 0x50; // 10, varint
const TRACE_PACKET_TRACK_EVENT: u8 = 0x5a; // 11, length-delimited
const TRACE_PACKET_CLOCK_ID: [u8; 2] = [0xd0, 0x03]; // 58, varint
const TRACK_EVENT_CATEGORY_IID: u8 = 0x18; // 3, varint (not packed)
const TRACK_EVENT_ANNOTATION: u8 = 0x22; // 4, length-delimited
const TRACK_EVENT_TYPE: u8 = 0x48; // 9, varint
const TRACK_EVENT_NAME_IID: u8 = 0x50; // 10, varint
const TRACK_EVENT_LOCATION_IID: [u8; 2] = [0x90, 0x02]; // 34, varint
const ANNOTATION_NAME_IID: u8 = 0x08; // 1, varint
const ANNOTATION_BOOL: u8 = 0x10; // 2, varint
const ANNOTATION_UINT: u8 = 0x18; // 3, varint

/// A track event that refers only to interned data.
#[derive(Debug, Clone, Copy, Default)]
struct Hot {
    kind: u8,
    /// Category and name iids (a named event has both).
    named: Option<(u64, u64)>,
    location_iid: Option<u64>,
    /// One argument: its name iid and value.
    arg: Option<(u64, Value)>,
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Bool(bool),
    Uint(u64),
}

/// What the hot path reads of an event: an `Event` without a text, or an
/// event of a `Plain` batch.
#[derive(Debug, Clone, Copy)]
pub(in super::super) struct HotEvent {
    pub ts_ns: u64,
    pub kind: Kind,
    pub function: u32,
    /// `Event::line` (0 but for line events).
    pub line: u32,
}

impl HotEvent {
    /// What the hot path takes of `event`; `None` for one with a text.
    #[inline]
    pub(in super::super) fn of(event: &Event) -> Option<HotEvent> {
        // `log_args` texts are rare: `encode` writes their arguments.
        event.text.is_none().then_some(HotEvent {
            ts_ns: event.ts_ns,
            kind: event.kind,
            function: event.function.0,
            line: event.line,
        })
    }
}

impl ThreadTrack {
    /// Writes the packet of `event` (as a `Trace.packet` field) at the
    /// start of `room` (`output::ROOM` bytes) if it is a call, return or
    /// line event that needs nothing new interned, and returns its length;
    /// `None` otherwise, and then nothing changed (`encode` builds the
    /// packet). `files` holds the stream's functions that have a file.
    #[inline(always)]
    pub(in super::super) fn encode_hot(
        &mut self,
        event: HotEvent,
        files: &IdSet,
        room: &mut [u8],
    ) -> Option<usize> {
        let frame = Frame::of(event.kind, event.function);
        // Each case writes its own packet, so that the fields it never has
        // cost nothing (`write_packet` is inlined into each).
        match event.kind {
            Kind::Return | Kind::CReturn if self.stack.last() == Some(&frame) => {
                // The common end: of the innermost slice, nothing to name.
                self.stack.pop();
                let hot = Hot {
                    kind: SLICE_END,
                    ..Hot::default()
                };
                Some(self.write(event, &hot, room))
            }
            Kind::Call | Kind::CCall => {
                let named = self.named(frame)?;
                self.stack.push(frame);
                let hot = Hot {
                    kind: SLICE_BEGIN,
                    named: Some(named),
                    location_iid: files.contains(frame.function).then_some(named.1),
                    arg: None,
                };
                Some(self.write(event, &hot, room))
            }
            Kind::Return | Kind::CReturn | Kind::Exception | Kind::SpanEnd => {
                let arg = match event.kind {
                    Kind::Exception => Some((self.arg_iid(ArgName::Exception)?, Value::Bool(true))),
                    _ => None,
                };
                let named = if self.stack.last() == Some(&frame) {
                    None
                } else {
                    // Not the innermost slice: the end names the one it ends.
                    Some(self.named(frame)?)
                };
                self.close(frame);
                let hot = Hot {
                    kind: SLICE_END,
                    named,
                    location_iid: None,
                    arg,
                };
                Some(self.write(event, &hot, room))
            }
            Kind::Line => {
                let (named, arg) = (self.named(frame)?, self.arg_iid(ArgName::Line)?);
                let hot = Hot {
                    kind: INSTANT,
                    named: Some(named),
                    location_iid: None,
                    arg: Some((arg, Value::Uint(u64::from(event.line)))),
                };
                Some(self.write(event, &hot, room))
            }
            _ => None,
        }
    }

    /// Writes `hot` at `event`'s time (advancing the sequence's clock).
    #[inline(always)]
    fn write(&mut self, event: HotEvent, hot: &Hot, room: &mut [u8]) -> usize {
        let timestamp = self.timestamp(event.ts_ns);
        write_packet(room, self.sequence, timestamp, hot)
    }

    /// The category and name iids of `frame`, if both are interned.
    fn named(&self, frame: Frame) -> Option<(u64, u64)> {
        let ready =
            self.interned & frame.category.bit() != 0 && self.functions.contains(frame.function);
        ready.then(|| (frame.category.iid(), u64::from(frame.function) + 1))
    }

    fn arg_iid(&self, arg: ArgName) -> Option<u64> {
        (self.interned & arg.bit() != 0).then(|| arg.iid())
    }
}

/// Bytes a hot packet's writer may use: more than the longest hot packet
/// (84 bytes: the 4 bytes of the two headers, then every field present at
/// its longest — category 11, annotation 24, type 2, name 11, location 12,
/// timestamp 11, sequence 6, clock 3), and less than 128, so that both
/// lengths are one-byte varints, and a power of two, so that masking a
/// position keeps it in bounds without a check per byte.
const HOT_ROOM: usize = 128;
const _: () = assert!(HOT_ROOM <= super::super::output::ROOM);

/// Writes bytes forward into the output's room (never read back before the
/// output is written out, so single-byte stores cost nothing extra;
/// assembling a packet in a stack buffer and copying it stalled on store
/// forwarding).
struct Cursor<'a> {
    bytes: &'a mut [u8; HOT_ROOM],
    pos: usize,
}

impl PutBytes for Cursor<'_> {
    #[inline(always)]
    fn byte(&mut self, byte: u8) {
        // The mask never changes a position (packets are shorter than
        // HOT_ROOM); it lets the compiler drop the bounds check.
        self.bytes[self.pos & (HOT_ROOM - 1)] = byte;
        self.pos += 1;
    }
}

/// Writes `Trace.packet` holding `hot` on `sequence` at `timestamp` at the
/// start of `out` (at least `HOT_ROOM` bytes); returns its length.
///
/// The fields go first, after room for the packet's and the event's
/// headers, and the lengths after them: both are below 128, one byte each,
/// so nothing needs measuring before it is written.
#[inline(always)]
fn write_packet(out: &mut [u8], sequence: u32, timestamp: Timestamp, hot: &Hot) -> usize {
    let bytes = out
        .first_chunk_mut::<HOT_ROOM>()
        .expect("the output's room holds a hot packet");
    let mut c = Cursor { bytes, pos: 4 };
    if let Some((category, _)) = hot.named {
        c.byte(TRACK_EVENT_CATEGORY_IID);
        c.varint(category);
    }
    if let Some((iid, value)) = hot.arg {
        c.byte(TRACK_EVENT_ANNOTATION);
        let len_at = c.pos;
        c.pos += 1;
        c.byte(ANNOTATION_NAME_IID);
        c.varint(iid);
        match value {
            Value::Bool(b) => {
                c.byte(ANNOTATION_BOOL);
                c.byte(u8::from(b));
            }
            Value::Uint(v) => {
                c.byte(ANNOTATION_UINT);
                c.varint(v);
            }
        }
        c.bytes[len_at & (HOT_ROOM - 1)] = (c.pos - len_at - 1) as u8;
    }
    c.byte(TRACK_EVENT_TYPE);
    c.byte(hot.kind);
    if let Some((_, name)) = hot.named {
        c.byte(TRACK_EVENT_NAME_IID);
        c.varint(name);
    }
    if let Some(iid) = hot.location_iid {
        c.byte(TRACK_EVENT_LOCATION_IID[0]);
        c.byte(TRACK_EVENT_LOCATION_IID[1]);
        c.varint(iid);
    }
    let event_end = c.pos;
    let (ts, absolute) = match timestamp {
        Timestamp::Delta(delta) => (delta, false),
        Timestamp::Absolute(ts_ns) => (ts_ns, true),
    };
    c.byte(TRACE_PACKET_TIMESTAMP);
    c.varint(ts);
    c.byte(TRACE_PACKET_SEQUENCE_ID);
    c.varint(u64::from(sequence));
    if absolute {
        c.byte(TRACE_PACKET_CLOCK_ID[0]);
        c.byte(TRACE_PACKET_CLOCK_ID[1]);
        c.byte(format::CLOCK_MONOTONIC as u8);
    }
    let len = c.pos;
    debug_assert!(len < HOT_ROOM);
    c.bytes[0] = PACKET_TAG;
    c.bytes[1] = (len - 2) as u8;
    c.bytes[2] = TRACE_PACKET_TRACK_EVENT;
    c.bytes[3] = (event_end - 4) as u8;
    len
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::event::FunctionId;
    use crate::export::perfetto::output::ROOM;
    use crate::export::perfetto::testing::function;
    use crate::export::perfetto_format::pb;
    use crate::writer::FunctionInfo;
    use prost::Message;

    #[test]
    fn varints_are_what_prost_reads() {
        for (value, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            let mut room = [0u8; HOT_ROOM];
            let mut c = Cursor {
                bytes: &mut room,
                pos: 0,
            };
            c.varint(value);
            assert_eq!(c.pos, len, "{value}");
            let mut bytes = &room[..len];
            assert_eq!(prost::encoding::decode_varint(&mut bytes).unwrap(), value);
        }
    }

    /// Every field at its longest: the packet stays below 128 bytes (its
    /// lengths are written as one byte each) and is what prost reads.
    #[test]
    fn the_longest_hot_packet_fits_its_room() {
        let hot = Hot {
            kind: INSTANT,
            named: Some((u64::MAX, u64::MAX)),
            location_iid: Some(u64::MAX),
            arg: Some((u64::MAX, Value::Uint(u64::MAX))),
        };
        let mut room = vec![0xee; ROOM];
        let len = write_packet(&mut room, u32::MAX, Timestamp::Absolute(u64::MAX), &hot);
        assert_eq!(len, 84);
        let packet = pb::TracePacket::decode(&room[2..len]).unwrap();
        assert_eq!(usize::from(room[1]), len - 2);
        assert_eq!(packet.timestamp, Some(u64::MAX));
        assert_eq!(packet.timestamp_clock_id, Some(format::CLOCK_MONOTONIC));
        let Some(pb::trace_packet::Data::TrackEvent(event)) = packet.data else {
            panic!("not a track event: {packet:?}");
        };
        assert_eq!(
            event.name_field,
            Some(pb::track_event::NameField::NameIid(u64::MAX))
        );
        assert_eq!(event.category_iids, vec![u64::MAX]);
        assert_eq!(
            event.debug_annotations[0].name_field,
            Some(pb::debug_annotation::NameField::NameIid(u64::MAX))
        );
    }

    fn event(ts_ns: u64, kind: Kind, function: u32, line: u32) -> Event {
        Event {
            ts_ns,
            tid: 9,
            kind,
            function: FunctionId(function),
            line,
            mark: None,
            text: None,
        }
    }

    /// A scenario that reaches every case of the hot path: begins with and
    /// without a file, bare and named ends, exceptions, lines, late events
    /// (absolute timestamps), large ids and deltas.
    fn scenario() -> Vec<Event> {
        let big = 300_000;
        let mut ts = 1_000;
        let mut events = Vec::new();
        let mut at = |delta: u64, kind, f, line| {
            ts += delta;
            events.push(event(ts, kind, f, line));
        };
        for round in 0..3u64 {
            at(5, Kind::Call, 1, 0);
            at(200, Kind::CCall, 2, 0);
            at(1 << 20, Kind::CReturn, 2, 0);
            at(1, Kind::Line, 1, 7 + round as u32 * 100_000);
            at(0, Kind::Call, big, 0);
            at(3, Kind::Exception, big, 0);
            at(3, Kind::Call, 1, 0);
            at(3, Kind::Call, 2, 0);
            // Ends the outer call: named, and drops the inner one.
            at(3, Kind::Return, 1, 0);
            at(1 << 40, Kind::Return, 1, 0);
        }
        // Late: older than the thread's clock.
        let last = events.last().unwrap().ts_ns;
        events.push(event(last - 500, Kind::Call, 1, 0));
        events.push(event(last - 400, Kind::Return, 1, 0));
        events
    }

    #[test]
    fn hot_packets_are_byte_for_byte_what_prost_writes() {
        let functions: HashMap<u32, FunctionInfo> = [(1, "a.py"), (2, ""), (300_000, "b.py")]
            .into_iter()
            .map(|(id, file)| (id, function(id, file)))
            .collect();
        let mut files = IdSet::default();
        for f in functions.values().filter(|f| !f.file.is_empty()) {
            files.insert(f.id.0);
        }
        // One track encodes with prost only, the other takes the hot path
        // whenever it can; both must write the same bytes.
        let mut slow = ThreadTrack::new(5, 77, 9);
        let mut fast = ThreadTrack::new(5, 77, 9);
        let _ = (slow.start(1_000, 1), fast.start(1_000, 1));
        let (mut hot, mut cold) = (0, 0);
        for event in scenario() {
            let mut expected = Vec::new();
            format::append_packet(&slow.encode(&event, &functions), &mut expected);
            let mut got = vec![0xee; ROOM];
            let hot_event = HotEvent::of(&event).expect("no texts here");
            if let Some(len) = fast.encode_hot(hot_event, &files, &mut got) {
                got.truncate(len);
                hot += 1;
            } else {
                got.clear();
                cold += 1;
                format::append_packet(&fast.encode(&event, &functions), &mut got);
            }
            assert_eq!(got, expected, "{event:?}");
            let packet = pb::TracePacket::decode(&got[2..]).unwrap();
            assert!(matches!(
                packet.data,
                Some(pb::trace_packet::Data::TrackEvent(_))
            ));
        }
        assert!(hot > 2 * cold, "hot {hot}, cold {cold}");
    }
}
