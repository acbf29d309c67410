//! The conventions of the Perfetto files rtrace writes, shared by the writer
//! (`perfetto`) and the reader (`perfetto_read`): the generated protobuf
//! types, packet framing, clock ids, interned categories and argument names,
//! and how a process's rtrace metadata rides in its track descriptor. This
//! is the only module of `export` that names prost types directly.

use prost::Message;

use crate::timeline::{ClockOffset, ProcessInfo, StreamId};

/// Types generated from `proto/perfetto_trace.proto`, a field-for-field
/// subset of Perfetto's own schema.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/perfetto.protos.rs"));
}

/// Tag of `Trace.packet` (field 1, length-delimited): every packet in a
/// file starts with this byte.
pub const PACKET_TAG: u8 = 0x0a;

/// Largest packet the reader accepts; the writer's packets are far smaller
/// (a packet holds one event plus the interned strings it introduces).
pub const MAX_PACKET_BYTES: u64 = 64 << 20;

/// `BuiltinClock::MONOTONIC`: all timestamps are CLOCK_MONOTONIC ns of the
/// collector's time base, and the trace says so (`primary_trace_clock`), so
/// Perfetto shows them as they are.
pub const CLOCK_MONOTONIC: u32 = pb::BuiltinClock::Monotonic as u32;

/// A sequence-scoped clock on each process sequence that has a clock
/// estimate: the recording host's CLOCK_MONOTONIC. Each estimate comes as
/// a clock snapshot pairing it with CLOCK_MONOTONIC of the collector (the
/// trace clock), so the offset is in Perfetto's `clock_snapshot` table.
pub const CLOCK_STREAM_HOST: u32 = 65;

/// The sequence-scoped incremental clock of every thread sequence (Perfetto
/// reserves 64..127 for such clocks; its SDK uses 64 the same way). Its
/// value always equals CLOCK_MONOTONIC: each sequence's snapshot pairs the
/// two at the same reading, so packets carry only the delta since the
/// previous packet on the sequence (1–3 bytes instead of 7).
pub const CLOCK_INCREMENTAL: u32 = 64;

/// `SEQ_INCREMENTAL_STATE_CLEARED`, set on the first packet of a sequence.
pub const SEQ_INCREMENTAL_STATE_CLEARED: u32 =
    pb::trace_packet::SequenceFlags::SeqIncrementalStateCleared as u32;

/// Event categories, interned per thread sequence under fixed ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Python functions (`call`, `return`, `exception`, `line`).
    Python = 1,
    /// Functions implemented in C (`c_call`, `c_return`).
    C = 2,
    /// User events: spans, instants, counters, flow ends.
    User = 3,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Python, Category::C, Category::User];

    /// The interning id.
    pub fn iid(self) -> u64 {
        self as u64
    }

    /// The name shown in Perfetto.
    pub fn name(self) -> &'static str {
        match self {
            Category::Python => "python",
            Category::C => "c",
            Category::User => "user",
        }
    }

    /// The category with this name.
    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Bit of this category in a set of interned ones.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Names of the arguments (debug annotations) of thread events, interned
/// per thread sequence under fixed ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgName {
    /// Line number of a `line` instant.
    Line = 1,
    /// `true` on the slice end of a function left by an exception.
    Exception = 2,
}

impl ArgName {
    pub const ALL: [ArgName; 2] = [ArgName::Line, ArgName::Exception];

    /// The interning id.
    pub fn iid(self) -> u64 {
        self as u64
    }

    /// The name shown in Perfetto (as `debug.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            ArgName::Line => "line",
            ArgName::Exception => "exception",
        }
    }

    /// The argument name with this text.
    pub fn from_name(name: &str) -> Option<ArgName> {
        ArgName::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Bit of this name in a set of interned ones (above the categories').
    pub fn bit(self) -> u8 {
        1 << (self as u8 + 4)
    }
}

/// Arguments of call slices recorded with `log_args`, not interned (each
/// text differs anyway): the reprs of the call's arguments on the slice's
/// begin, of the returned value on its end.
pub const ARG_CALL_ARGS: &str = "args";
pub const ARG_RETURN: &str = "return";

/// Category of the instants rtrace adds about streams.
pub const RTRACE_CATEGORY: &str = "rtrace";
/// Name of the instant ending a stream that finished cleanly.
pub const END_CLEAN: &str = "rtrace: stream end";
/// Name of the instant ending a stream that stopped without its end marker.
pub const END_TRUNCATED: &str = "rtrace: stream truncated \u{2014} process died";
/// Arguments of the end instants.
pub const END_ARG_EVENTS: &str = "events";
pub const END_ARG_LOST: &str = "lost";
pub const END_ARG_TRUNCATED: &str = "truncated";
/// Name of the per-process counter track of lost events.
pub const LOST_TRACK_NAME: &str = "rtrace lost events";
/// Argument of the end instants: clock jumps seen in the stream (only
/// when there were some).
pub const END_ARG_CLOCK_JUMPS: &str = "clock_jumps";
/// Counter tracks of a stream's clock estimate over time: its clock minus
/// the collector's, and the uncertainty of that (ns).
pub const CLOCK_OFFSET_TRACK_NAME: &str = "rtrace clock offset (ns)";
pub const CLOCK_UNCERTAINTY_TRACK_NAME: &str = "rtrace clock uncertainty (ns)";
/// Name of the instant marking a clock jump on a process track.
pub const CLOCK_JUMP: &str = "rtrace: clock jump";
/// Arguments of the clock jump instant.
pub const CLOCK_JUMP_ARG_KIND: &str = "kind";
pub const CLOCK_JUMP_ARG_SIZE: &str = "jump_ns";

/// Prefix of a counter track's description; the function id of the
/// counter's name follows (the reader takes it back).
pub const COUNTER_DESCRIPTION: &str = "rtrace counter ";

/// The uuid of the track of a user counter of a process.
pub fn counter_uuid(process: u64, function: u32) -> u64 {
    child_uuid(
        process,
        &[b"counter".as_slice(), &function.to_le_bytes()].concat(),
    )
}

/// Appends `packet` to `out` as one `Trace.packet` field.
pub fn append_packet(packet: &pb::TracePacket, out: &mut Vec<u8>) {
    out.push(PACKET_TAG);
    // Encoding into a Vec cannot run out of space.
    let _ = packet.encode_length_delimited(out);
}

/// A 64-bit FNV-1a hash, used for track uuids: stable across runs and
/// versions (unlike `DefaultHasher`), so the same process gets the same
/// uuids in every file and concatenated files do not mix up tracks.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// The uuid of a process's track.
pub fn process_uuid(stream: StreamId, info: &ProcessInfo) -> u64 {
    fnv1a(&[
        b"process",
        &stream.0.to_le_bytes(),
        info.host.as_bytes(),
        info.boot_id.as_bytes(),
        &info.pid.to_le_bytes(),
        &info.start_unix_ns.to_le_bytes(),
    ])
}

/// The uuid of a track under a process: a thread's (`what` = tid bytes) or
/// the lost-events counter's.
pub fn child_uuid(process: u64, what: &[u8]) -> u64 {
    fnv1a(&[b"child", &process.to_le_bytes(), what])
}

/// Keys of the `key: value` lines of a process track's description.
const KEY_STREAM: &str = "rtrace stream";
const KEY_SESSION: &str = "session";
const KEY_PID: &str = "pid";
const KEY_PPID: &str = "ppid";
const KEY_PID_NAMESPACE: &str = "pid_namespace";
const KEY_PROCESS_START: &str = "process_start_ticks";
const KEY_HOST: &str = "host";
const KEY_BOOT_ID: &str = "boot_id";
const KEY_START: &str = "start_unix_ns";
const KEY_RECORDER: &str = "recorder";
const KEY_RELAYED_BY: &str = "relayed_by";
const KEY_CLOCK: &str = "clock";
const KEY_CLOCK_OFFSET: &str = "clock_offset_ns";
const KEY_CLOCK_UNCERTAINTY: &str = "clock_uncertainty_ns";
const KEY_CLOCK_DRIFT: &str = "clock_drift_ppb";
const KEY_CLOCK_SAMPLES: &str = "clock_samples";
const KEY_CLOCK_JUMPS: &str = "clock_jumps";

/// The description of a process track: the stream's metadata as
/// `key: value` lines. People see it in Perfetto's track details; the
/// reader takes the metadata back from it. Values are escaped so that a
/// newline in a session name cannot forge another line. The pid and ppid
/// are the process's own, which the descriptor's may not be (see
/// `export::pids`).
pub fn describe_process(stream: StreamId, info: &ProcessInfo) -> String {
    let lines = [
        (KEY_STREAM, stream.0.to_string()),
        (KEY_SESSION, info.session.clone()),
        (KEY_PID, info.pid.to_string()),
        (KEY_PPID, info.ppid.to_string()),
        (KEY_PID_NAMESPACE, info.pid_namespace.to_string()),
        (KEY_PROCESS_START, info.process_start_ticks.to_string()),
        (KEY_HOST, info.host.clone()),
        (KEY_BOOT_ID, info.boot_id.clone()),
        (KEY_START, info.start_unix_ns.to_string()),
        (KEY_RECORDER, info.recorder.clone()),
        (KEY_RELAYED_BY, info.relayed_by.join(", ")),
    ];
    key_lines(&lines)
}

/// Lines added to a process track's description once the collector has a
/// clock estimate for the stream (or saw its clock jump): the stream's
/// clock minus the collector's, its uncertainty, drift and sample count.
pub fn describe_clock(offset: Option<&ClockOffset>, jumps: u64) -> String {
    let mut lines = Vec::new();
    if let Some(c) = offset {
        lines.push((KEY_CLOCK, c.status.as_str().to_owned()));
        lines.push((KEY_CLOCK_OFFSET, c.offset_ns.to_string()));
        lines.push((KEY_CLOCK_UNCERTAINTY, c.uncertainty_ns.to_string()));
        lines.push((KEY_CLOCK_DRIFT, c.drift_ppb.to_string()));
        lines.push((KEY_CLOCK_SAMPLES, c.samples.to_string()));
    }
    lines.push((KEY_CLOCK_JUMPS, jumps.to_string()));
    key_lines(&lines)
}

fn key_lines(lines: &[(&str, String)]) -> String {
    lines
        .iter()
        .map(|(key, value)| format!("{key}: {}", escape(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads back what `describe_process` wrote into `info` (fields it does not
/// hold stay as they are); returns the stream id, if present.
pub fn parse_description(text: &str, info: &mut ProcessInfo) -> Option<StreamId> {
    let mut stream = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let value = unescape(value);
        match key {
            KEY_STREAM => stream = value.parse().ok().map(StreamId),
            KEY_SESSION => info.session = value,
            KEY_PID => info.pid = value.parse().unwrap_or(info.pid),
            KEY_PPID => info.ppid = value.parse().unwrap_or(info.ppid),
            KEY_PID_NAMESPACE => info.pid_namespace = value.parse().unwrap_or(0),
            KEY_PROCESS_START => info.process_start_ticks = value.parse().unwrap_or(0),
            KEY_HOST => info.host = value,
            KEY_BOOT_ID => info.boot_id = value,
            KEY_START => info.start_unix_ns = value.parse().unwrap_or(0),
            KEY_RECORDER => info.recorder = value,
            KEY_RELAYED_BY if !value.is_empty() => {
                info.relayed_by = value.split(", ").map(str::to_owned).collect()
            }
            _ => {}
        }
    }
    stream
}

/// The labels Perfetto UI shows under the process name: `host=<host>`,
/// and `pidns=<inode>` for a process in a pid namespace of its own (a
/// container's), which tells apart containers of one host name.
pub fn process_labels(info: &ProcessInfo) -> Vec<String> {
    let mut labels = vec![format!("host={}", info.host)];
    labels.extend(info.own_pid_namespace().map(|n| format!("pidns={n}")));
    labels
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_round_trip_awkward_values() {
        let info = ProcessInfo {
            session: "a\nb: c\\n".into(),
            pid: 7,
            ppid: 5,
            pid_namespace: 4026531836,
            process_start_ticks: 123456,
            host: "box".into(),
            boot_id: "id".into(),
            start_unix_ns: 42,
            recorder: "CPython 3.12\r".into(),
            relayed_by: vec!["relay-a".into(), "relay-b".into()],
            ..ProcessInfo::default()
        };
        let text = describe_process(StreamId(3), &info);
        // The descriptor's pid, which may be a stand-in: the text's wins.
        let mut back = ProcessInfo {
            pid: 4_194_304,
            ..ProcessInfo::default()
        };
        assert_eq!(parse_description(&text, &mut back), Some(StreamId(3)));
        assert_eq!(back, info);
    }

    #[test]
    fn uuids_differ_per_part_boundary_and_are_never_zero() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_ne!(fnv1a(&[]), 0);
    }

    #[test]
    fn processes_in_a_pid_namespace_of_their_own_are_labelled_so() {
        let mut info = ProcessInfo {
            host: "box".into(),
            pid_namespace: 0xEFFF_FFFC, // the initial namespace
            ..ProcessInfo::default()
        };
        assert_eq!(process_labels(&info), ["host=box"]);
        info.pid_namespace = 4026532281;
        assert_eq!(process_labels(&info), ["host=box", "pidns=4026532281"]);
    }
}
