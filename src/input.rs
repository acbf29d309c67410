//! Any rtrace file as events: a stream file (one process, `read`) or a
//! merged timeline (rtrace's Perfetto files, many processes,
//! `export::MergedReader`), told apart by their first bytes. What reads
//! "a recording", whatever its form (`rtrace.read`, `rtrace stats`), goes
//! through here.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::event::FunctionId;
use crate::export::MergedReader;
use crate::read::{Event, EventReader, FrameReader};
use crate::timeline::{ProcessInfo, StreamId};
use crate::writer::FunctionInfo;
use crate::{Error, Result};

/// A Perfetto trace starts with field 1 (a TracePacket): this byte; a
/// stream with `wire::MAGIC`.
pub const TIMELINE_FIRST_BYTE: u8 = 0x0a;

const _: () = assert!(
    crate::wire::MAGIC[0] != TIMELINE_FIRST_BYTE,
    "a stream's first byte tells it from a timeline"
);

/// An open rtrace file.
pub enum Input {
    /// A stream file; its process is `StreamId(0)`.
    Stream(Box<EventReader<BufReader<File>>>),
    /// A merged timeline.
    Merged(Box<MergedReader<BufReader<File>>>),
}

impl Input {
    /// Opens `path`, a stream file or a merged timeline. An empty file is
    /// `Error::Empty`; anything else is read as a stream, whose reader says
    /// what is wrong with it. The file is opened and read once, so a pipe
    /// works too (`rtrace stats <(zcat t.rtrace.gz)`).
    pub fn open(path: &Path) -> Result<Input> {
        let file = File::open(path).map_err(|error| Error::Open {
            path: path.to_owned(),
            error,
        })?;
        let mut input = BufReader::new(file);
        // A read error here comes again, and is reported, as the stream
        // reader reads its header.
        let what = path.display().to_string();
        let first = match input.fill_buf() {
            Ok([]) => return Err(Error::Empty { what }),
            Ok(bytes) => Some(bytes[0]),
            Err(_) => None,
        };
        Ok(if first == Some(TIMELINE_FIRST_BYTE) {
            Input::Merged(Box::new(MergedReader::new(input, what)))
        } else {
            let frames = FrameReader::with_header(input, what)?;
            Input::Stream(Box::new(EventReader::new(frames)?))
        })
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        match self {
            Input::Stream(r) => r.bytes_read(),
            Input::Merged(r) => r.bytes_read(),
        }
    }

    /// True for a merged timeline.
    pub fn merged(&self) -> bool {
        matches!(self, Input::Merged(_))
    }

    /// The next event, with the process it belongs to.
    pub fn next_event(&mut self) -> Result<Option<(StreamId, Event)>> {
        match self {
            Input::Stream(r) => Ok(r.next_event()?.map(|e| (StreamId(0), e))),
            Input::Merged(r) => Ok(r.next_event()?.map(|m| (m.stream, m.event))),
        }
    }

    /// A function of a process, once its first event has been read.
    pub fn function(&self, stream: StreamId, id: FunctionId) -> Option<&FunctionInfo> {
        match self {
            Input::Stream(r) => r.function(id),
            Input::Merged(r) => r.function(stream, id),
        }
    }

    /// A process, once read.
    pub fn process(&self, stream: StreamId) -> Option<ProcessInfo> {
        match self {
            Input::Stream(r) => r.hello().map(ProcessInfo::from),
            Input::Merged(r) => r.process(stream).cloned(),
        }
    }

    /// The processes read so far.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        match self {
            Input::Stream(r) => r.hello().map(ProcessInfo::from).into_iter().collect(),
            Input::Merged(r) => r.streams().map(|(_, p)| p.clone()).collect(),
        }
    }

    /// The processes read so far, each with its stream (the one
    /// `next_event` gives its events with) and how its stream ended:
    /// `Some(true)` cut short (its process died, or the file was cut),
    /// `Some(false)` whole, `None` not in what was read (yet).
    pub fn process_ends(&self) -> Vec<(StreamId, ProcessInfo, Option<bool>)> {
        match self {
            Input::Stream(r) => {
                let end = if r.end().is_some() {
                    Some(false)
                } else {
                    r.truncated().then_some(true)
                };
                r.hello()
                    .map(|h| (StreamId(0), ProcessInfo::from(h), end))
                    .into_iter()
                    .collect()
            }
            Input::Merged(r) => r
                .streams()
                .map(|(id, p)| (id, p.clone(), r.stream_end(id).map(|e| e.truncated)))
                .collect(),
        }
    }

    /// True when the input ended early (known once read to the end): a
    /// stream without its end marker; a timeline cut inside a packet, or
    /// with a process whose stream ended cut short or has no end in it (its
    /// collector was killed, or is still writing it).
    pub fn truncated(&self) -> bool {
        match self {
            Input::Stream(r) => r.truncated(),
            Input::Merged(r) => {
                r.truncated()
                    || r.streams()
                        .any(|(id, _)| r.stream_end(id).is_none_or(|e| e.truncated))
            }
        }
    }

    /// Events reported lost (by every process of a timeline) so far.
    pub fn lost(&self) -> u64 {
        match self {
            Input::Stream(r) => r.lost(),
            Input::Merged(r) => r
                .streams()
                .filter_map(|(id, _)| r.stream_end(id))
                .map(|e| e.lost)
                .sum(),
        }
    }
}
