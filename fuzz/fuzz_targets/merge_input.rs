//! Decoded streams from any bytes, fed to the merge a chunk (a batch of
//! events, as the collector reads them) at a time in an interleaving the
//! input chooses: every event pushed comes out exactly once, each thread's
//! events in the order they were pushed, and the merge never panics (the
//! global timestamp order is checked against a sort oracle by the property
//! tests in tests/stream_props.rs, on well-formed streams).
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use rtrace::merge::{MergeConfig, Merger};
use rtrace::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use rtrace::{Chunk, Event, EventReader, FrameReader, FunctionInfo, StreamItem};

use std::collections::HashMap;

/// Events as they come out, per stream and thread.
#[derive(Default)]
struct Check {
    threads: HashMap<(StreamId, u64), Vec<Event>>,
}

impl TimelineSink for &mut Check {
    fn process(&mut self, _: StreamId, _: &ProcessInfo) -> io::Result<()> {
        Ok(())
    }
    fn function(&mut self, _: StreamId, _: &FunctionInfo) -> io::Result<()> {
        Ok(())
    }
    fn thread(&mut self, _: StreamId, _: u64, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        self.threads
            .entry((stream, event.tid))
            .or_default()
            .push(event.clone());
        Ok(())
    }
    fn stream_end(&mut self, _: StreamId, _: &StreamEnd) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chunks of one stream (as the collector reads them: a batch of
/// events at a time), up to its end or first error.
fn chunks(bytes: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    if let Ok(mut reader) =
        FrameReader::with_header(bytes, "fuzz".into()).and_then(EventReader::new)
    {
        while let Ok(Some(chunk)) = reader.next_chunk() {
            out.push(chunk);
        }
    }
    out
}

/// Splits `data` into streams, each a little-endian u16 length then that
/// many bytes of frames (the file header is put before them).
fn streams(mut data: &[u8], most: usize) -> Vec<Vec<Chunk>> {
    let mut out = Vec::new();
    while out.len() < most && data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        let bytes: Vec<u8> = rtrace::wire::file_header()
            .iter()
            .chain(&data[2..2 + len])
            .copied()
            .collect();
        out.push(chunks(&bytes));
        data = &data[2 + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // data: control byte, schedule length, schedule, then streams.
    let &[control, schedule_len, ref rest @ ..] = data else {
        return;
    };
    let (schedule, rest) = rest.split_at(usize::from(schedule_len).min(rest.len()));
    let streams = streams(rest, 1 + usize::from(control % 4));
    if streams.is_empty() {
        return;
    }
    let mut check = Check::default();
    let config = MergeConfig {
        window: std::time::Duration::from_millis(u64::from(control >> 2)),
        max_buffered: 64 + usize::from(control),
    };
    let mut merger = Merger::new(&mut check, config);
    let ids: Vec<StreamId> = streams
        .iter()
        .map(|_| merger.add_stream(ProcessInfo::default()).unwrap())
        .collect();
    let mut next = vec![0usize; streams.len()];
    let mut pushed: HashMap<(StreamId, u64), Vec<Event>> = HashMap::new();
    let mut turn = schedule.iter().cycle();
    while next.iter().zip(&streams).any(|(n, s)| *n < s.len()) {
        let pick = usize::from(*turn.next().unwrap_or(&0)) % streams.len();
        let s = (0..streams.len())
            .map(|k| (pick + k) % streams.len())
            .find(|&k| next[k] < streams[k].len())
            .unwrap();
        let chunk = streams[s][next[s]].clone();
        next[s] += 1;
        // What the merge must give back: each thread's events in order,
        // an event older than its thread's previous one clamped to it.
        let mut expect = |tid: u64, event: &Event| {
            let thread = pushed.entry((ids[s], tid)).or_default();
            let mut event = event.clone();
            if let Some(previous) = thread.last() {
                event.ts_ns = event.ts_ns.max(previous.ts_ns);
            }
            thread.push(event);
        };
        match &chunk {
            Chunk::Item(StreamItem::Event(event)) => expect(event.tid, event),
            Chunk::Events { tid, events } => events.iter().for_each(|e| expect(*tid, e)),
            Chunk::Plain { tid, plain } => {
                (0..plain.len()).for_each(|i| expect(*tid, &plain.event(*tid, i)))
            }
            _ => {}
        }
        merger.push_chunk(ids[s], chunk).unwrap();
    }
    for id in ids {
        merger.end_stream(id, StreamEnd::default(), None).unwrap();
    }
    merger.finish().unwrap();
    assert_eq!(
        check.threads, pushed,
        "each thread's events come out once, in order"
    );
});
