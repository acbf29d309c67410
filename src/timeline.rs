//! The merged timeline as output writers see it: processes (one per
//! stream), their functions and threads, and events in timestamp order.
//! `merge` produces it; `export::*` writers consume it.

use std::io;

use crate::read::Event;
use crate::writer::FunctionInfo;

/// Identifies one input stream (one traced process) within a merge.
/// Dense, starting at 0, in the order streams joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

/// A traced process, from its stream's hello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub session: String,
    pub pid: u32,
    pub ppid: u32,
    pub host: String,
    pub boot_id: String,
    pub argv: Vec<String>,
    pub start_unix_ns: u64,
    /// Describes the recorder (runtime, hook).
    pub recorder: String,
}

impl ProcessInfo {
    /// The name shown for the process track: `<session> (pid N)`.
    pub fn display_name(&self) -> String {
        format!("{} (pid {})", self.session, self.pid)
    }
}

/// How a stream ended, known once it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamEnd {
    /// Events the stream delivered.
    pub events: u64,
    /// Events the recorder reported lost.
    pub lost: u64,
    /// True when the stream stopped without its end marker.
    pub truncated: bool,
    /// Timestamp (CLOCK_MONOTONIC ns, collector's time base) of the
    /// stream's last event, or 0 if it had none.
    pub last_ts_ns: u64,
}

/// Receives a merged timeline. Calls come in this order per stream:
/// `process` first; `function`/`thread` before the first event that uses
/// them; `event`s in non-decreasing `ts_ns` across all streams (a late
/// event, which the merge counts, may break that); `stream_end` last.
/// `finish` ends the output.
pub trait TimelineSink {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()>;
    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()>;
    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()>;
    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()>;
    /// A run of events of one stream, in order (the merge hands them out
    /// this way); the same as one `event` call each, which it defaults to.
    fn events(&mut self, stream: StreamId, events: &[Event]) -> io::Result<()> {
        events
            .iter()
            .try_for_each(|event| self.event(stream, event))
    }
    fn stream_end(&mut self, stream: StreamId, end: &StreamEnd) -> io::Result<()>;
    fn finish(&mut self) -> io::Result<()>;
}

impl<T: TimelineSink + ?Sized> TimelineSink for Box<T> {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()> {
        (**self).process(stream, process)
    }
    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        (**self).function(stream, function)
    }
    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()> {
        (**self).thread(stream, tid, name)
    }
    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        (**self).event(stream, event)
    }
    fn events(&mut self, stream: StreamId, events: &[Event]) -> io::Result<()> {
        (**self).events(stream, events)
    }
    fn stream_end(&mut self, stream: StreamId, end: &StreamEnd) -> io::Result<()> {
        (**self).stream_end(stream, end)
    }
    fn finish(&mut self) -> io::Result<()> {
        (**self).finish()
    }
}
