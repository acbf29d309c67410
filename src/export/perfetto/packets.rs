//! Builders of the packets that are not thread events: sequence starts,
//! clock snapshots, process descriptors and trees, and stream ends.

use crate::timeline::{ProcessInfo, StreamEnd, StreamId};

use super::super::perfetto_format::{self as format, pb};
use pb::track_event::{NameField, Type};

fn named_annotation(name: &str, value: pb::debug_annotation::Value) -> pb::DebugAnnotation {
    pb::DebugAnnotation {
        name_field: Some(pb::debug_annotation::NameField::Name(name.to_owned())),
        value: Some(value),
    }
}

pub(super) fn sequence_packet(sequence: u32) -> pb::TracePacket {
    pb::TracePacket {
        trusted_packet_sequence_id: Some(sequence),
        ..Default::default()
    }
}

/// The first packet of a sequence: it clears incremental state.
pub(super) fn first_packet(sequence: u32) -> pb::TracePacket {
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
pub(super) fn clock_snapshot(ts_ns: u64, incremental: bool) -> pb::ClockSnapshot {
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

/// The process's track descriptor, with the pid viewers are given.
pub(super) fn process_descriptor(
    stream: StreamId,
    uuid: u64,
    info: &ProcessInfo,
    shown_pid: u32,
) -> pb::TrackDescriptor {
    pb::TrackDescriptor {
        uuid: Some(uuid),
        description: Some(format::describe_process(stream, info)),
        process: Some(pb::ProcessDescriptor {
            pid: Some(shown_pid as i32),
            cmdline: info.argv.clone(),
            process_name: Some(info.display_name()),
            process_labels: format::process_labels(info),
        }),
        ..Default::default()
    }
}

/// The pid and ppid viewers are given for a process (`export::pids`).
#[derive(Debug, Clone, Copy)]
pub(super) struct ShownPids {
    pub pid: u32,
    pub ppid: u32,
}

/// The process's `ProcessTree` entry. Its cmdline has at least two entries,
/// so Perfetto takes the first whole as the process name.
pub(super) fn process_tree(info: &ProcessInfo, shown: ShownPids) -> pb::ProcessTree {
    let mut cmdline = vec![info.display_name()];
    cmdline.extend(info.argv.iter().cloned());
    if cmdline.len() == 1 {
        cmdline.push(String::new());
    }
    pb::ProcessTree {
        processes: vec![pb::process_tree::Process {
            pid: Some(shown.pid as i32),
            ppid: Some(shown.ppid as i32),
            cmdline,
        }],
    }
}

/// Where a stream's own packets go: its process sequence and track.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProcessTrack {
    pub sequence: u32,
    pub uuid: u64,
}

/// The packets that close a stream whose events span `first_ts_ns` to
/// `ts_ns`: the end instant and, if events were lost, the lost-events
/// counter with the total over that span.
pub(super) fn end_packets(
    state: ProcessTrack,
    end: &StreamEnd,
    clock_jumps: u64,
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
    let mut debug_annotations = vec![
        named_annotation(format::END_ARG_EVENTS, Value::UintValue(end.events)),
        named_annotation(format::END_ARG_LOST, Value::UintValue(end.lost)),
        named_annotation(format::END_ARG_TRUNCATED, Value::BoolValue(end.truncated)),
    ];
    if clock_jumps > 0 {
        debug_annotations.push(named_annotation(
            format::END_ARG_CLOCK_JUMPS,
            Value::UintValue(clock_jumps),
        ));
    }
    let instant = pb::TrackEvent {
        r#type: Some(Type::Instant as i32),
        track_uuid: Some(state.uuid),
        name_field: Some(NameField::Name(name.to_owned())),
        categories: vec![format::RTRACE_CATEGORY.to_owned()],
        debug_annotations,
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
