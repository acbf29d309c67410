//! The wire protocol: the only module that names prost types. It converts
//! rtrace's own types to frames and frames back, with errors that say what
//! is missing.

use prost::Message;

use crate::clock::{self, Snapshot};
use crate::clocksync::SyncSample;
use crate::event::{Kind, RawEvent};
use crate::mark::{self, Arg, ArgValue, Mark};

/// Types generated from `proto/rtrace.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/rtrace.v1.rs"));
}

pub use pb::frame::Body;

pub mod batch;
pub mod palette;

/// Magic at the start of a stream file.
pub const MAGIC: &[u8; 6] = b"RTRACE";
/// Stream format version this rtrace writes and the newest it reads. It
/// reads every version from 1: version 2 added `EventBatch.palette`, which
/// a version-1 reader would ignore, misreading the codes.
pub const FORMAT_VERSION: u16 = 2;
/// Length of the file header: magic plus little-endian version.
pub const HEADER_LEN: usize = 8;
/// Largest frame a reader accepts. Writers stay far below it (a batch of
/// the largest buffer is a few MiB).
pub const MAX_FRAME_BYTES: u64 = 64 << 20;

/// The file header for the current version.
pub fn file_header() -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..6].copy_from_slice(MAGIC);
    header[6..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// Appends `body` as one length-delimited frame to `out`.
pub fn encode_frame(body: Body, out: &mut Vec<u8>) {
    let frame = pb::Frame { body: Some(body) };
    // Encoding into a Vec cannot run out of space.
    let _ = frame.encode_length_delimited(out);
}

/// A clock snapshot frame body.
pub fn clock_body(snapshot: &Snapshot) -> Body {
    complete_clock_body(snapshot, 0)
}

/// A clock snapshot frame that also promises that every event stamped
/// before `complete_ticks` was written before it (0: no promise).
pub fn complete_clock_body(snapshot: &Snapshot, complete_ticks: u64) -> Body {
    Body::Clock(pb::ClockSnapshot {
        ticks: snapshot.ticks,
        monotonic_ns: snapshot.monotonic_ns,
        unix_ns: snapshot.unix_ns,
        complete_ticks,
    })
}

/// The wire description of the counter.
pub fn clock_info(description: &clock::Description) -> pb::ClockInfo {
    let source = match description.source {
        clock::Source::Tsc => pb::clock_info::Source::Tsc,
        clock::Source::Monotonic => pb::clock_info::Source::Monotonic,
    };
    pb::ClockInfo {
        source: source as i32,
        ticks_per_second: description.ticks_per_second,
    }
}

/// Encodes one thread's events as a batch. `events` is a thread buffer's
/// content: events, each mark followed by its payload slots; a call or
/// return event with a `line` refers to `texts[line - 1]`. The codes are
/// ranked in a palette when that makes the batch smaller (`palette`).
pub fn batch_body(tid: u64, events: &[RawEvent], lost_before: u64, texts: Vec<String>) -> Body {
    let base_ticks = events.first().map_or(0, |e| e.ticks);
    let mut tick_deltas = Vec::with_capacity(events.len());
    let mut codes = Vec::with_capacity(events.len());
    let mut lines = Vec::new();
    let mut marks = Vec::new();
    let mut texts = texts.into_iter().map(Some).collect::<Vec<_>>();
    let (mut text_events, mut event_texts) = (Vec::new(), Vec::new());
    let mut previous = base_ticks;
    let mut i = 0;
    // The index of the event in the batch (payload slots are not events).
    let mut index = 0u32;
    while let Some(event) = events.get(i) {
        i += 1;
        tick_deltas.push(event.ticks.wrapping_sub(previous) as i64);
        previous = event.ticks;
        codes.push(u64::from(event.code));
        match event.kind() {
            Some(Kind::Line) => lines.push(event.line),
            Some(kind) if kind.has_payload() => {
                let end = (i + event.line as usize).min(events.len());
                marks.push(mark_to_wire(mark::decode_slots(&events[i..end])));
                i = end;
            }
            Some(kind) if !kind.is_mark() => {
                if let Some(text) = (event.line as usize)
                    .checked_sub(1)
                    .and_then(|t| texts.get_mut(t)?.take())
                {
                    text_events.push(index);
                    event_texts.push(text);
                }
            }
            _ => {}
        }
        index += 1;
    }
    let palette = palette::rank_codes(&mut codes);
    Body::Batch(pb::EventBatch {
        tid,
        base_ticks,
        tick_deltas,
        codes,
        palette,
        lines,
        lost_before,
        marks,
        texts: event_texts,
        text_events,
    })
}

fn mark_to_wire(mark: Mark) -> pb::Mark {
    use pb::arg::Value;
    let args = mark
        .args
        .into_iter()
        .map(|arg| pb::Arg {
            key: arg.key,
            value: Some(match arg.value {
                ArgValue::Int(v) => Value::Int(v),
                ArgValue::Float(v) => Value::Float(v),
                ArgValue::Str(v) => Value::Str(v),
                ArgValue::Bool(v) => Value::Bool(v),
            }),
        })
        .collect();
    pb::Mark {
        flow_id: mark.flow_id,
        value: mark.value,
        args,
    }
}

/// A wire mark as rtrace's own type.
pub fn mark_from_wire(mark: pb::Mark) -> Mark {
    use pb::arg::Value;
    let args = mark
        .args
        .into_iter()
        .filter_map(|arg| {
            let value = match arg.value? {
                Value::Int(v) => ArgValue::Int(v),
                Value::Float(v) => ArgValue::Float(v),
                Value::Str(v) => ArgValue::Str(v),
                Value::Bool(v) => ArgValue::Bool(v),
            };
            Some(Arg {
                key: arg.key,
                value,
            })
        })
        .collect();
    Mark {
        flow_id: mark.flow_id,
        value: mark.value,
        args,
    }
}

/// Decodes one frame's bytes (without its length prefix). `None`: a frame
/// whose body this version does not know (written by a newer rtrace), to
/// be skipped.
pub fn decode_frame(bytes: &[u8]) -> Result<Option<Body>, String> {
    let frame = pb::Frame::decode(bytes).map_err(|e| e.to_string())?;
    Ok(frame.body)
}

/// A clock exchange sample frame body.
pub fn sync_body(sample: &SyncSample) -> Body {
    Body::ClockSync(pb::ClockSync {
        ping_sent_ns: sample.ping_sent_ns,
        ping_received_ns: sample.ping_received_ns,
        pong_sent_ns: sample.pong_sent_ns,
        pong_received_ns: sample.pong_received_ns,
        hop: sample.hop,
    })
}

impl From<&pb::ClockSync> for SyncSample {
    fn from(sync: &pb::ClockSync) -> Self {
        SyncSample {
            ping_sent_ns: sync.ping_sent_ns,
            ping_received_ns: sync.ping_received_ns,
            pong_sent_ns: sync.pong_sent_ns,
            pong_received_ns: sync.pong_received_ns,
            hop: sync.hop,
        }
    }
}

/// The frame that carries a connection's token (see `Auth` in the proto).
pub fn auth_frame(token: &str, out: &mut Vec<u8>) {
    encode_frame(
        Body::Auth(pb::Auth {
            token: token.to_owned(),
        }),
        out,
    );
}

/// Largest `HelloReply` a recorder accepts from a collector.
pub const MAX_REPLY_BYTES: u64 = 64 << 10;

/// A collector's answer to a hello, length-delimited.
pub fn reply_bytes(reply: &pb::HelloReply) -> Vec<u8> {
    reply.encode_length_delimited_to_vec()
}

/// Reads a collector's length-delimited `HelloReply`.
pub fn read_reply(input: &mut (impl std::io::Read + ?Sized)) -> std::io::Result<pb::HelloReply> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut len = 0u64;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        input.read_exact(&mut byte)?;
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    if len > MAX_REPLY_BYTES {
        return Err(invalid(format!(
            "the collector's reply announces {len} bytes"
        )));
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes)?;
    pb::HelloReply::decode(bytes.as_slice()).map_err(|e| invalid(e.to_string()))
}

impl From<&pb::Hello> for crate::timeline::ProcessInfo {
    fn from(hello: &pb::Hello) -> Self {
        crate::timeline::ProcessInfo {
            session: hello.session.clone(),
            pid: hello.pid,
            ppid: hello.ppid,
            host: hello.host.clone(),
            boot_id: hello.boot_id.clone(),
            pid_namespace: hello.pid_namespace,
            process_start_ticks: hello.process_start_ticks,
            argv: hello.argv.clone(),
            start_unix_ns: hello.start_unix_ns,
            recorder: hello.recorder.clone(),
            relayed_by: hello.relayed_by.clone(),
        }
    }
}
