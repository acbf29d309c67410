//! `rtrace-collect merge`: joins stream files written without a collector,
//! with the same merge as the live collector. Reads the stream that lags
//! furthest behind first, so memory stays bounded by what the streams
//! promised (see `merge`), or else by the reorder window.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rtrace::merge::{MergeConfig, Merger, StreamStats, ThreadOrder};
use rtrace::timeline::{ProcessInfo, StreamEncoder, StreamEnd, TimelineSink};
use rtrace::{Chunk, EventReader, StreamItem};

use crate::status::{regular_file_size, Progress};

/// A stream's encoder, if the output has one (see `StreamEncoder`), and
/// the order of its threads, kept before encoding.
type Encoder = (Option<Box<dyn StreamEncoder>>, ThreadOrder);

/// What an offline merge did: per stream, its stats and file size; and
/// the inputs left out because they could not be read at all, with why
/// (naming the input: `input_error`).
pub struct Merged {
    pub stats: Vec<StreamStats>,
    pub bytes: Vec<u64>,
    pub skipped: Vec<(PathBuf, String)>,
}

/// A stream opened for a merge, and its size if it is known ahead (a
/// regular file's; not a pipe's).
pub type Opened = (EventReader<BufReader<File>>, Option<u64>);

/// Merges `inputs` into the sink `create` makes. A file that cannot be
/// read at all is skipped (and named in `Merged::skipped`); one that
/// breaks mid-way keeps what came before. Every input is opened before
/// `create` runs: when none can be read, the merge fails and no output is
/// made (nor an existing one truncated). `on_progress` is called before
/// each chunk is read and once all are (see `status::ProgressLine`).
pub fn merge_files<S: TimelineSink>(
    inputs: &[PathBuf],
    create: impl FnOnce() -> Result<S>,
    config: MergeConfig,
    on_progress: impl FnMut(Progress),
) -> Result<Merged> {
    let mut opened = Vec::new();
    let mut skipped = Vec::new();
    for path in inputs {
        match EventReader::open(path) {
            Ok(reader) => opened.push((reader, regular_file_size(path))),
            Err(e) => skipped.push((path.clone(), input_error(path, e))),
        }
    }
    merge_opened(opened, skipped, create, config, on_progress)
}

/// What went wrong with input `path`, naming it once: most of the
/// reader's errors name it, an I/O error does not. Said of a skipped
/// input, and of one `stats` cannot read.
pub fn input_error(path: &Path, why: impl std::fmt::Display) -> String {
    let why = why.to_string();
    let name = path.display().to_string();
    if why.contains(&name) {
        why
    } else {
        format!("{name}: {why}")
    }
}

/// `merge_files` of inputs already opened; `skipped` are those that could
/// not be, with why (`input_error`).
pub fn merge_opened<S: TimelineSink>(
    opened: Vec<Opened>,
    skipped: Vec<(PathBuf, String)>,
    create: impl FnOnce() -> Result<S>,
    config: MergeConfig,
    mut on_progress: impl FnMut(Progress),
) -> Result<Merged> {
    if opened.is_empty() {
        let why: Vec<String> = skipped.iter().map(|(_, e)| e.clone()).collect();
        bail!(
            "no input could be read, so nothing was written: {}",
            why.join("; ")
        );
    }
    let total = opened.iter().map(|(_, size)| *size).sum();
    let mut merger = Merger::new(create()?, config);
    let mut readers: Vec<Option<(EventReader<BufReader<File>>, Encoder)>> = Vec::new();
    let mut bytes = Vec::new();
    // Per stream, the events it delivered: what its end reports, truncated
    // or not, as a live collector's does.
    let mut delivered = Vec::new();
    for (reader, size) in opened {
        let process = reader.hello().map(ProcessInfo::from).unwrap_or_default();
        let process = rtrace::sanitize::process(process);
        let id = merger.add_stream(process)?;
        let encoder = (merger.stream_encoder(id), ThreadOrder::default());
        readers.push(Some((reader, encoder)));
        bytes.push(size.unwrap_or(0));
        delivered.push(0u64);
    }
    let mut read: u64 = readers.iter().flatten().map(|(r, _)| r.bytes_read()).sum();
    while let Some(stream) = merger.lagging_stream() {
        on_progress(Progress { read, total });
        let slot = &mut readers[stream.0 as usize];
        let Some((reader, (encoder, order))) = slot else {
            break;
        };
        let before = reader.bytes_read();
        let next = reader.next_chunk();
        read += reader.bytes_read() - before;
        match next {
            Ok(Some(mut chunk)) => {
                let clamped = order.chunk(&mut chunk);
                crate::ingest::sanitize_chunk(&mut chunk);
                delivered[stream.0 as usize] += crate::ingest::chunk_events(&chunk) as u64;
                if let Some(encoder) = encoder {
                    encoder.chunk(&mut chunk);
                }
                merger.push_chunk(stream, chunk)?;
                if clamped > 0 {
                    merger.push_chunk(stream, Chunk::Item(StreamItem::Clamped(clamped)))?;
                }
            }
            Ok(None) => {
                let end = end_of(reader, false, delivered[stream.0 as usize]);
                // What was read: a pipe has no size ahead.
                bytes[stream.0 as usize] = reader.bytes_read();
                merger.end_stream(stream, end, None)?;
                *slot = None;
            }
            Err(e) => {
                let end = end_of(reader, true, delivered[stream.0 as usize]);
                bytes[stream.0 as usize] = reader.bytes_read();
                merger.end_stream(stream, end, Some(e.to_string()))?;
                *slot = None;
            }
        }
    }
    on_progress(Progress { read, total });
    let (_, stats) = merger.finish()?;
    Ok(Merged {
        stats,
        bytes,
        skipped,
    })
}

/// How a stream ended; `events`: those it delivered (a truncated stream
/// has no end marker to count them).
fn end_of<R: std::io::Read>(reader: &EventReader<R>, broken: bool, events: u64) -> StreamEnd {
    StreamEnd {
        events,
        lost: reader.lost(),
        truncated: broken || reader.truncated(),
        last_ts_ns: 0,
    }
}
