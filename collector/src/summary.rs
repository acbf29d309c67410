//! `rtrace-collect stats`: a summary of stream files and merged timelines,
//! a row per process.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rtrace::export::MergedReader;
use rtrace::input::Input;
use rtrace::timeline::{ProcessInfo, StreamId};
use rtrace::{sanitize, Event, EventReader, FunctionId, Kind};

/// What one process's stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub path: PathBuf,
    pub session: String,
    pub pid: u32,
    pub host: String,
    pub recorder: String,
    pub events: u64,
    pub calls: u64,
    pub lost: u64,
    pub threads: usize,
    pub functions: usize,
    /// Bytes of the stream read; `None` for a process of a merged
    /// timeline, whose bytes are not its own.
    pub bytes: Option<u64>,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// True when the stream has no end marker.
    pub truncated: bool,
}

impl StreamSummary {
    /// Seconds between the first and the last event.
    pub fn duration_s(&self) -> f64 {
        match (self.first_ns, self.last_ns) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
            _ => 0.0,
        }
    }
}

/// Events between calls of the progress callback.
const PROGRESS_EVENTS: u64 = 16_384;

/// Reads a whole stream file, or merged timeline, and summarises each
/// process in it, calling `on_progress` with the bytes read so far every
/// few thousand events.
pub fn summarize_file(path: &Path, on_progress: impl FnMut(u64)) -> Result<Vec<StreamSummary>> {
    Ok(match Input::open(path)? {
        Input::Stream(reader) => vec![summarize_stream(path, *reader, on_progress)?],
        Input::Merged(reader) => summarize_timeline(path, *reader, on_progress)?,
    })
}

/// One process's events, counted.
#[derive(Default)]
struct Tally {
    events: u64,
    calls: u64,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    threads: HashSet<u64>,
    functions: HashSet<FunctionId>,
}

impl Tally {
    fn add(&mut self, ev: &Event) {
        self.events += 1;
        self.calls += u64::from(matches!(ev.kind, Kind::Call | Kind::CCall));
        self.first_ns = Some(self.first_ns.map_or(ev.ts_ns, |f| f.min(ev.ts_ns)));
        self.last_ns = Some(self.last_ns.map_or(ev.ts_ns, |l| l.max(ev.ts_ns)));
        self.threads.insert(ev.tid);
        self.functions.insert(ev.function);
    }

    /// The summary of `process`'s stream with these counts.
    fn summary(self, path: &Path, process: &ProcessInfo, lost: u64) -> StreamSummary {
        // Printed on a terminal: made printable as the collector does.
        let name = |text: &str| sanitize::printable(text, sanitize::MAX_NAME_CHARS);
        StreamSummary {
            path: path.to_owned(),
            session: name(&process.session),
            pid: process.pid,
            host: name(&process.host),
            recorder: name(&process.recorder),
            events: self.events,
            calls: self.calls,
            lost,
            threads: self.threads.len(),
            functions: self.functions.len(),
            bytes: None,
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            truncated: false,
        }
    }
}

fn summarize_stream(
    path: &Path,
    mut reader: EventReader<BufReader<File>>,
    mut on_progress: impl FnMut(u64),
) -> Result<StreamSummary> {
    let mut tally = Tally::default();
    while let Some(ev) = reader.next_event()? {
        tally.add(&ev);
        if tally.events % PROGRESS_EVENTS == 0 {
            on_progress(reader.bytes_read());
        }
    }
    let process = reader.hello().map(ProcessInfo::from).unwrap_or_default();
    let mut summary = tally.summary(path, &process, reader.lost());
    // What was read, not the file's size: a pipe has none.
    summary.bytes = Some(reader.bytes_read());
    summary.truncated = reader.truncated();
    Ok(summary)
}

fn summarize_timeline(
    path: &Path,
    mut reader: MergedReader<BufReader<File>>,
    mut on_progress: impl FnMut(u64),
) -> Result<Vec<StreamSummary>> {
    let mut tallies: BTreeMap<StreamId, Tally> = BTreeMap::new();
    let mut events = 0u64;
    while let Some(merged) = reader.next_event()? {
        tallies.entry(merged.stream).or_default().add(&merged.event);
        events += 1;
        if events % PROGRESS_EVENTS == 0 {
            on_progress(reader.bytes_read());
        }
    }
    let mut streams: Vec<(StreamId, ProcessInfo)> =
        reader.streams().map(|(id, p)| (id, p.clone())).collect();
    if streams.is_empty() {
        anyhow::bail!(
            "{} is a timeline without any process in it (yet: its collector may still be \
             waiting for the first stream)",
            path.display()
        );
    }
    streams.sort_by_key(|(id, _)| *id);
    Ok(streams
        .into_iter()
        .map(|(id, process)| {
            let end = reader.stream_end(id);
            let tally = tallies.remove(&id).unwrap_or_default();
            let mut summary = tally.summary(path, &process, end.map_or(0, |e| e.lost));
            // Cut short, or no end in the file: its collector was killed,
            // or is still writing it.
            summary.truncated = reader.truncated() || end.is_none_or(|e| e.truncated);
            summary
        })
        .collect())
}

/// Formats summaries as an aligned table.
pub fn table(summaries: &[StreamSummary]) -> String {
    let mut rows = vec![[
        "session",
        "pid",
        "host",
        "events",
        "calls",
        "lost",
        "threads",
        "bytes/event",
        "seconds",
        "end",
        "file",
    ]
    .map(String::from)
    .to_vec()];
    for s in summaries {
        let per_event = match s.bytes {
            Some(bytes) if s.events > 0 => format!("{:.2}", bytes as f64 / s.events as f64),
            _ => "-".into(),
        };
        rows.push(vec![
            s.session.clone(),
            s.pid.to_string(),
            s.host.clone(),
            s.events.to_string(),
            s.calls.to_string(),
            s.lost.to_string(),
            s.threads.to_string(),
            per_event,
            format!("{:.3}", s.duration_s()),
            if s.truncated { "truncated" } else { "clean" }.into(),
            s.path.display().to_string(),
        ]);
    }
    crate::report::aligned(&rows)
}
