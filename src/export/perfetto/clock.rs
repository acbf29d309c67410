//! The packets that record a stream's clock alignment on its process
//! sequence: counter tracks of the offset and its uncertainty over time, a
//! clock snapshot per estimate pairing the recording host's CLOCK_MONOTONIC
//! (a sequence-scoped clock) with the trace clock, and an instant per clock
//! jump.

use crate::clock::ClockJump;
use crate::timeline::{ClockOffset, ClockStatus};

use super::super::perfetto_format::{self as format, pb};
use super::packets::{sequence_packet, ProcessTrack};
use pb::debug_annotation::Value;
use pb::track_event::{CounterValueField, NameField, Type};

/// What the writer remembers of a stream's clock.
#[derive(Debug, Default)]
pub(super) struct ClockState {
    pub offset: Option<ClockOffset>,
    pub jumps: u64,
    /// The counter tracks are described.
    tracks: bool,
    /// Readings of the last snapshot written (trace clock, host clock).
    last_snapshot: Option<(u64, u64)>,
}

fn offset_track(process: u64) -> u64 {
    format::child_uuid(process, b"clock offset")
}

fn uncertainty_track(process: u64) -> u64 {
    format::child_uuid(process, b"clock uncertainty")
}

fn absolute(track: ProcessTrack, ts_ns: u64, data: pb::trace_packet::Data) -> pb::TracePacket {
    pb::TracePacket {
        timestamp: Some(ts_ns),
        timestamp_clock_id: Some(format::CLOCK_MONOTONIC),
        data: Some(data),
        ..sequence_packet(track.sequence)
    }
}

fn counter_descriptor(track: ProcessTrack, uuid: u64, name: &str) -> pb::TracePacket {
    let descriptor = pb::TrackDescriptor {
        uuid: Some(uuid),
        parent_uuid: Some(track.uuid),
        name: Some(name.to_owned()),
        counter: Some(pb::CounterDescriptor {
            unit: Some(pb::counter_descriptor::Unit::TimeNs as i32),
        }),
        ..Default::default()
    };
    pb::TracePacket {
        data: Some(pb::trace_packet::Data::TrackDescriptor(descriptor)),
        ..sequence_packet(track.sequence)
    }
}

fn counter_value(track: ProcessTrack, uuid: u64, ts_ns: u64, value: i64) -> pb::TracePacket {
    let event = pb::TrackEvent {
        r#type: Some(Type::Counter as i32),
        track_uuid: Some(uuid),
        counter_value_field: Some(CounterValueField::CounterValue(value)),
        ..Default::default()
    };
    absolute(track, ts_ns, pb::trace_packet::Data::TrackEvent(event))
}

impl ClockState {
    /// Takes a new estimate; returns the packets that record it (none for
    /// a stream whose clock was not measured).
    pub fn offset_packets(
        &mut self,
        track: ProcessTrack,
        offset: &ClockOffset,
    ) -> Vec<pb::TracePacket> {
        self.offset = Some(*offset);
        let mut packets = Vec::new();
        if offset.status == ClockStatus::Unmeasured {
            return packets;
        }
        let (offset_uuid, uncertainty_uuid) =
            (offset_track(track.uuid), uncertainty_track(track.uuid));
        if !self.tracks {
            self.tracks = true;
            packets.push(counter_descriptor(
                track,
                offset_uuid,
                format::CLOCK_OFFSET_TRACK_NAME,
            ));
            packets.push(counter_descriptor(
                track,
                uncertainty_uuid,
                format::CLOCK_UNCERTAINTY_TRACK_NAME,
            ));
        }
        let ts = offset.at_ns;
        packets.push(counter_value(track, offset_uuid, ts, offset.offset_ns));
        let uncertainty = i64::try_from(offset.uncertainty_ns).unwrap_or(i64::MAX);
        packets.push(counter_value(track, uncertainty_uuid, ts, uncertainty));
        let host = (i128::from(ts) + i128::from(offset.offset_ns)).clamp(0, i128::from(u64::MAX));
        let reading = (ts, host as u64);
        // Perfetto wants every clock to go forward from one snapshot to the next.
        let forward = self
            .last_snapshot
            .is_none_or(|(a, b)| reading.0 > a && reading.1 > b);
        if forward {
            self.last_snapshot = Some(reading);
            packets.push(snapshot_packet(track, reading));
        }
        packets
    }

    /// Takes a clock jump; returns its instant.
    pub fn jump_packet(&mut self, track: ProcessTrack, jump: &ClockJump) -> pb::TracePacket {
        self.jumps += 1;
        let annotation = |name: &str, value| pb::DebugAnnotation {
            name_field: Some(pb::debug_annotation::NameField::Name(name.to_owned())),
            value: Some(value),
        };
        let instant = pb::TrackEvent {
            r#type: Some(Type::Instant as i32),
            track_uuid: Some(track.uuid),
            name_field: Some(NameField::Name(format::CLOCK_JUMP.to_owned())),
            categories: vec![format::RTRACE_CATEGORY.to_owned()],
            debug_annotations: vec![
                annotation(
                    format::CLOCK_JUMP_ARG_KIND,
                    Value::StringValue(jump.kind.as_str().to_owned()),
                ),
                annotation(format::CLOCK_JUMP_ARG_SIZE, Value::IntValue(jump.size_ns)),
            ],
            ..Default::default()
        };
        absolute(
            track,
            jump.at_ns,
            pb::trace_packet::Data::TrackEvent(instant),
        )
    }

    /// True when the process description should carry clock lines.
    pub fn worth_describing(&self) -> bool {
        self.jumps > 0 || self.offset.is_some()
    }
}

/// A snapshot reading the trace clock and the stream host's clock.
fn snapshot_packet(track: ProcessTrack, (trace_ns, host_ns): (u64, u64)) -> pb::TracePacket {
    let clock = |clock_id, timestamp| pb::clock_snapshot::Clock {
        clock_id: Some(clock_id),
        timestamp: Some(timestamp),
        is_incremental: None,
    };
    let snapshot = pb::ClockSnapshot {
        clocks: vec![
            clock(format::CLOCK_MONOTONIC, trace_ns),
            clock(format::CLOCK_STREAM_HOST, host_ns),
        ],
        primary_trace_clock: Some(pb::BuiltinClock::Monotonic as i32),
    };
    pb::TracePacket {
        data: Some(pb::trace_packet::Data::ClockSnapshot(snapshot)),
        ..sequence_packet(track.sequence)
    }
}
