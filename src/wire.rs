//! The wire protocol: the only module that names prost types. It converts
//! rtrace's own types to frames and frames back, with errors that say what
//! is missing.

use prost::Message;

use crate::clock::{self, Snapshot};
use crate::event::RawEvent;

/// Types generated from `proto/rtrace.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/rtrace.v1.rs"));
}

pub use pb::frame::Body;

/// Magic at the start of a stream file.
pub const MAGIC: &[u8; 6] = b"RTRACE";
/// Stream format version this rtrace writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
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
    Body::Clock(pb::ClockSnapshot {
        ticks: snapshot.ticks,
        monotonic_ns: snapshot.monotonic_ns,
        unix_ns: snapshot.unix_ns,
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

/// Encodes one thread's events as a batch. `events` must not be empty;
/// a call or return event with a `line` refers to `texts[line - 1]`.
pub fn batch_body(tid: u64, events: &[RawEvent], lost_before: u64, texts: Vec<String>) -> Body {
    let base_ticks = events.first().map_or(0, |e| e.ticks);
    let mut tick_deltas = Vec::with_capacity(events.len());
    let mut codes = Vec::with_capacity(events.len());
    let mut lines = Vec::new();
    let mut texts = texts.into_iter().map(Some).collect::<Vec<_>>();
    let (mut text_events, mut event_texts) = (Vec::new(), Vec::new());
    let mut previous = base_ticks;
    for (i, event) in events.iter().enumerate() {
        tick_deltas.push(event.ticks.wrapping_sub(previous) as i64);
        previous = event.ticks;
        codes.push(u64::from(event.code));
        if event.kind() == Some(crate::event::Kind::Line) {
            lines.push(event.line);
        } else if let Some(text) = (event.line as usize)
            .checked_sub(1)
            .and_then(|t| texts.get_mut(t)?.take())
        {
            text_events.push(i as u32);
            event_texts.push(text);
        }
    }
    Body::Batch(pb::EventBatch {
        tid,
        base_ticks,
        tick_deltas,
        codes,
        lines,
        lost_before,
        texts: event_texts,
        text_events,
    })
}

/// Decodes one frame's bytes (without its length prefix).
pub fn decode_frame(bytes: &[u8]) -> Result<Body, String> {
    let frame = pb::Frame::decode(bytes).map_err(|e| e.to_string())?;
    frame.body.ok_or_else(|| "frame has no body".to_owned())
}

impl From<&pb::Hello> for crate::timeline::ProcessInfo {
    fn from(hello: &pb::Hello) -> Self {
        crate::timeline::ProcessInfo {
            session: hello.session.clone(),
            pid: hello.pid,
            ppid: hello.ppid,
            host: hello.host.clone(),
            boot_id: hello.boot_id.clone(),
            argv: hello.argv.clone(),
            start_unix_ns: hello.start_unix_ns,
            recorder: hello.recorder.clone(),
        }
    }
}
