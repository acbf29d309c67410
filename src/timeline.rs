//! The merged timeline as output writers see it: processes (one per
//! stream), their functions and threads, and events in timestamp order.
//! `merge` produces it; `export::*` writers consume it.

use std::io;

use crate::clock::ClockJump;
use crate::read::{Chunk, Encoded, Event, Plain, StreamItem};
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
    /// Inode of the process's pid namespace; 0 if unknown (older
    /// recorders). See `pid_space`.
    pub pid_namespace: u64,
    /// When the process started, in clock ticks after boot; 0 if unknown
    /// (older recorders). Tells a reused pid from the same process.
    pub process_start_ticks: u64,
    pub argv: Vec<String>,
    pub start_unix_ns: u64,
    /// Describes the recorder (runtime, hook).
    pub recorder: String,
    /// Hosts of the relay collectors that forwarded the stream.
    pub relayed_by: Vec<String>,
}

impl ProcessInfo {
    /// The name shown for the process track: `<session> (pid N)`.
    pub fn display_name(&self) -> String {
        format!("{} (pid {})", self.session, self.pid)
    }

    /// Where the process's pid and ppid are unique: its host, boot and pid
    /// namespace. Two processes of one space with the same pid are one
    /// process, unless they started at different times (a pid reused);
    /// of two spaces, two processes.
    pub fn pid_space(&self) -> PidSpace {
        PidSpace {
            host: self.host.clone(),
            boot_id: self.boot_id.clone(),
            pid_namespace: self.pid_namespace,
        }
    }

    /// The process's pid namespace when it is one of its own (a
    /// container's), not the host's initial one; None if unknown.
    pub fn own_pid_namespace(&self) -> Option<u64> {
        /// The initial pid namespace's inode, the same on every Linux host
        /// (`PROC_PID_INIT_INO`).
        const INITIAL: u64 = 0xEFFF_FFFC;
        Some(self.pid_namespace).filter(|&n| n != 0 && n != INITIAL)
    }

    /// What tells one process from another: its pid space, pid and start
    /// (two streams of one process, recorded twice, share it; a start of
    /// 0, unknown, matches only another unknown one).
    pub fn identity(&self) -> (PidSpace, u32, u64) {
        (self.pid_space(), self.pid, self.process_start_ticks)
    }
}

/// See `ProcessInfo::pid_space`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PidSpace {
    host: String,
    boot_id: String,
    pid_namespace: u64,
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

/// How a stream's clock was aligned with the collector's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockStatus {
    /// No clock exchange: the stream's timestamps are used as they are
    /// (right for streams of the collector's own host, unknown otherwise).
    #[default]
    Unmeasured,
    /// Measured by clock exchanges; the offset is applied.
    Measured,
    /// Measured, and the stream shares the collector's boot id with an
    /// offset within its uncertainty of 0: exactly 0 is applied.
    SameHost,
}

impl ClockStatus {
    /// A short name for stats and the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockStatus::Unmeasured => "not measured",
            ClockStatus::Measured => "measured",
            ClockStatus::SameHost => "same host",
        }
    }
}

/// The collector's estimate of a stream's clock: the stream's
/// CLOCK_MONOTONIC minus the collector's, as applied from `at_ns` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockOffset {
    pub status: ClockStatus,
    /// Stream clock minus collector clock at `at_ns`, in ns (what is
    /// subtracted from the stream's timestamps).
    pub offset_ns: i64,
    /// Half the best round trip behind the estimate (plus a relay's
    /// uncertainty): the true offset is within this of `offset_ns`.
    pub uncertainty_ns: u64,
    /// How fast the offset changes: ns per second of stream time (ppb).
    pub drift_ppb: i64,
    /// Exchanges that went into the estimate so far.
    pub samples: u64,
    /// When (collector time, ns) the estimate took effect.
    pub at_ns: u64,
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
    /// The stream's clock estimate changed (any time before `stream_end`).
    fn clock_offset(&mut self, _stream: StreamId, _offset: &ClockOffset) -> io::Result<()> {
        Ok(())
    }
    /// The stream's clock jumped at `jump.at_ns` (collector time).
    fn clock_jump(&mut self, _stream: StreamId, _jump: &ClockJump) -> io::Result<()> {
        Ok(())
    }
    /// An encoder of `stream`'s events into this sink's output that runs
    /// ahead of the merge, on another thread (see `StreamEncoder`). Once
    /// it is taken, the stream's events come with its bytes to
    /// `encoded_events`, and its functions and thread names go to it.
    /// `None` (the default): the sink encodes events as they are written.
    fn stream_encoder(&mut self, _stream: StreamId) -> Option<Box<dyn StreamEncoder>> {
        None
    }
    /// A batch that `encoded_events` has had every event of: its buffers
    /// are free. A sink whose encoders can refill them takes them back
    /// (a new batch's output buffer then needs no allocating and zeroing);
    /// by default they are dropped.
    fn recycle(&mut self, _encoded: Encoded) {}
    /// Frees what the sink keeps for reuse (buffers given back by
    /// `recycle` and by its output), which would otherwise stay with it
    /// for good. The live collector calls it once it has been idle a
    /// while; the next batches allocate anew.
    fn release_spare(&mut self) {}
    /// Passes what the sink has gathered in memory on to its output,
    /// without waiting for the output to have written it, so that the file
    /// holds everything written to the sink so far. The live collector
    /// calls it every second (its `live::WRITE_OUT_EVERY`): a sink's buffer
    /// fills only with more events, and those of streams that have gone
    /// quiet (a service between requests) would otherwise wait in it until
    /// more came or the collector finished. By default nothing (a sink
    /// that writes through).
    fn write_out(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A run of events of one stream, in order, as its encoder made them:
    /// their timestamps and bytes. Only sinks that hand out encoders get
    /// these.
    fn encoded_events(
        &mut self,
        stream: StreamId,
        _ts_ns: &[u64],
        _bytes: &[u8],
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "encoded events for stream {}, but this sink has no encoder",
                stream.0
            ),
        ))
    }
}

/// Encodes one stream's events into a sink's output ahead of the merge.
/// A stream's bytes can depend on the stream's own items in their order,
/// but not on other streams, so the collector runs one encoder per
/// connection, on that connection's reader thread: the work spreads over
/// the cores, and the merge, which alone sees every stream, only orders
/// bytes. It sees every item of the stream, in the stream's order.
pub trait StreamEncoder: Send {
    fn function(&mut self, function: &FunctionInfo);
    fn thread(&mut self, tid: u64, name: &str);
    /// Encodes `events` (of one thread, in order) into `out`: their
    /// timestamps, bytes, and where each one's bytes end.
    fn encode(&mut self, events: &[Event], out: &mut Encoded);

    /// Encodes the plain events of thread `tid` into `out` as `encode`
    /// does; by default as the `Event`s they stand for. An encoder that
    /// reads the columns directly saves building those.
    fn encode_plain(&mut self, tid: u64, plain: Plain, out: &mut Encoded) {
        self.encode(&plain.into_events(tid), out);
    }

    /// Takes the next chunk of the stream: learns its function or thread
    /// name, or encodes its events (an event as an item too), so that the
    /// chunk becomes `Chunk::Encoded`.
    fn chunk(&mut self, chunk: &mut Chunk) {
        let mut encoded = Encoded::default();
        let tid = match chunk {
            Chunk::Item(StreamItem::Function(function)) => return self.function(function),
            Chunk::Item(StreamItem::Thread { tid, name }) => return self.thread(*tid, name),
            Chunk::Item(StreamItem::Event(event)) => {
                self.encode(std::slice::from_ref(&*event), &mut encoded);
                event.tid
            }
            // Clock heartbeats and estimates, jumps and counts: the merge's.
            Chunk::Item(_) | Chunk::Encoded { .. } => return,
            Chunk::Events { tid, events } => {
                self.encode(events, &mut encoded);
                *tid
            }
            Chunk::Plain { tid, plain } => {
                self.encode_plain(*tid, std::mem::take(plain), &mut encoded);
                *tid
            }
        };
        *chunk = Chunk::Encoded { tid, encoded };
    }
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
    fn clock_offset(&mut self, stream: StreamId, offset: &ClockOffset) -> io::Result<()> {
        (**self).clock_offset(stream, offset)
    }
    fn clock_jump(&mut self, stream: StreamId, jump: &ClockJump) -> io::Result<()> {
        (**self).clock_jump(stream, jump)
    }
    fn stream_encoder(&mut self, stream: StreamId) -> Option<Box<dyn StreamEncoder>> {
        (**self).stream_encoder(stream)
    }
    fn encoded_events(&mut self, stream: StreamId, ts_ns: &[u64], bytes: &[u8]) -> io::Result<()> {
        (**self).encoded_events(stream, ts_ns, bytes)
    }
    fn recycle(&mut self, encoded: Encoded) {
        (**self).recycle(encoded)
    }
    fn release_spare(&mut self) {
        (**self).release_spare()
    }
    fn write_out(&mut self) -> io::Result<()> {
        (**self).write_out()
    }
}
