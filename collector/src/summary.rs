//! `rtrace-collect stats`: a summary of stream files.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rtrace::{sanitize, EventReader, Kind};

/// What one stream holds.
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
    pub bytes: u64,
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

/// Reads a whole stream file and summarises it.
pub fn summarize(path: &Path) -> Result<StreamSummary> {
    summarize_with_progress(path, |_| {})
}

/// Events between calls of `summarize_with_progress`'s callback.
const PROGRESS_EVENTS: u64 = 16_384;

/// `summarize`, calling `on_progress` with the bytes of the file read so
/// far every few thousand events.
pub fn summarize_with_progress(
    path: &Path,
    mut on_progress: impl FnMut(u64),
) -> Result<StreamSummary> {
    let mut reader = EventReader::open(path)?;
    let mut summary = StreamSummary {
        path: path.to_owned(),
        session: String::new(),
        pid: 0,
        host: String::new(),
        recorder: String::new(),
        events: 0,
        calls: 0,
        lost: 0,
        threads: 0,
        functions: 0,
        bytes: 0,
        first_ns: None,
        last_ns: None,
        truncated: false,
    };
    let mut threads = std::collections::HashSet::new();
    let mut functions = std::collections::HashSet::new();
    while let Some(ev) = reader.next_event()? {
        summary.events += 1;
        if summary.events % PROGRESS_EVENTS == 0 {
            on_progress(reader.bytes_read());
        }
        summary.calls += u64::from(matches!(ev.kind, Kind::Call | Kind::CCall));
        summary.first_ns = Some(summary.first_ns.map_or(ev.ts_ns, |f| f.min(ev.ts_ns)));
        summary.last_ns = Some(summary.last_ns.map_or(ev.ts_ns, |l| l.max(ev.ts_ns)));
        threads.insert(ev.tid);
        functions.insert(ev.function);
    }
    if let Some(hello) = reader.hello() {
        // Printed on a terminal: made printable as the collector does.
        let name = |text: &str| sanitize::printable(text, sanitize::MAX_NAME_CHARS);
        summary.session = name(&hello.session);
        summary.pid = hello.pid;
        summary.host = name(&hello.host);
        summary.recorder = name(&hello.recorder);
    }
    // What was read, not the file's size: a pipe has none.
    summary.bytes = reader.bytes_read();
    summary.lost = reader.lost();
    summary.truncated = reader.truncated();
    summary.threads = threads.len();
    summary.functions = functions.len();
    Ok(summary)
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
        let per_event = if s.events > 0 {
            format!("{:.2}", s.bytes as f64 / s.events as f64)
        } else {
            "-".into()
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
