//! Properties of the read path on generated input: a valid stream cut at
//! any byte reads back exactly the events of its whole frames and reports
//! the truncation; the merge of out-of-order multi-thread streams equals a
//! sort of their events. Also writes the fuzzers' seed corpus.

use std::collections::HashMap;
use std::io;

use proptest::prelude::*;
use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::merge::{MergeConfig, Merger};
use rtrace::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use rtrace::wire::{self, pb, Body};
use rtrace::{Chunk, Error, Event, EventReader, FrameReader, FunctionInfo, StreamItem};

/// A stream to build: batches of events of a few threads, interleaved.
#[derive(Debug, Clone)]
struct Spec {
    threads: u64,
    /// (thread, events in the batch, tick gap before it, lost before it)
    batches: Vec<(u64, usize, u64, u64)>,
    lines: bool,
    end: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1u64..4, any::<bool>(), any::<bool>()).prop_flat_map(|(threads, lines, end)| {
        let batch = (
            0..threads,
            1usize..12,
            0u64..5000,
            prop_oneof![3 => Just(0u64), 1 => 1u64..9],
        );
        prop::collection::vec(batch, 1..10).prop_map(move |batches| Spec {
            threads,
            batches,
            lines,
            end,
        })
    })
}

/// Encodes `spec` as the writer does: hello, interns, then per batch a
/// snapshot covering it and the batch; `End` if asked.
fn build(spec: &Spec) -> Vec<u8> {
    let mut out = wire::file_header().to_vec();
    let hello = pb::Hello {
        protocol_version: 1,
        session: "props".into(),
        pid: 7,
        clock: Some(pb::ClockInfo {
            source: 2,
            ticks_per_second: 1e9,
        }),
        ..Default::default()
    };
    wire::encode_frame(Body::Hello(hello), &mut out);
    for id in 0..3 {
        let function = pb::Function {
            id,
            name: format!("f{id}"),
            ..Default::default()
        };
        wire::encode_frame(Body::Function(function), &mut out);
    }
    for tid in 0..spec.threads {
        let thread = pb::Thread {
            tid,
            name: format!("t{tid}"),
        };
        wire::encode_frame(Body::Thread(thread), &mut out);
    }
    let mut ticks = vec![1_000u64; spec.threads as usize];
    let mut clock = 0u64;
    let mut total = 0u64;
    for (n, &(tid, len, gap, lost)) in spec.batches.iter().enumerate() {
        let t = &mut ticks[tid as usize];
        let events: Vec<RawEvent> = (0..len)
            .map(|i| {
                *t += gap / (i as u64 + 1) + 1;
                let kind = match (spec.lines, i % 3) {
                    (true, 2) => Kind::Line,
                    (_, k) if k % 2 == 0 => Kind::Call,
                    _ => Kind::Return,
                };
                RawEvent::new(*t, FunctionId((n % 3) as u32), kind, i as u32 + 1)
            })
            .collect();
        clock = clock.max(*t) + 1;
        let snapshot = pb::ClockSnapshot {
            ticks: clock,
            monotonic_ns: clock * 3,
            unix_ns: 0,
            complete_ticks: 0,
        };
        wire::encode_frame(Body::Clock(snapshot), &mut out);
        wire::encode_frame(wire::batch_body(tid, &events, lost, Vec::new()), &mut out);
        total += len as u64;
    }
    if spec.end {
        let end = pb::End {
            events: total,
            ..Default::default()
        };
        wire::encode_frame(Body::End(end), &mut out);
    }
    out
}

/// Every event of a stream, or the error that stopped it, and whether it
/// was truncated.
fn read_all(bytes: &[u8]) -> Result<(Vec<Event>, bool), Error> {
    let mut reader = FrameReader::with_header(bytes, "props".into()).and_then(EventReader::new)?;
    let mut events = Vec::new();
    while let Some(event) = reader.next_event()? {
        events.push(event);
    }
    Ok((events, reader.truncated()))
}

/// (end offset, events in it) of each frame of a valid stream.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = wire::HEADER_LEN;
    let mut out = Vec::new();
    while at < bytes.len() {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = bytes[at];
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let events = match wire::decode_frame(&bytes[at..at + len]).unwrap() {
            Some(Body::Batch(batch)) => batch.codes.len(),
            _ => 0,
        };
        at += len;
        out.push((at, events));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_stream_cut_anywhere_gives_back_exactly_its_whole_frames(spec in spec()) {
        let bytes = build(&spec);
        let (all, truncated) = read_all(&bytes).unwrap();
        prop_assert_eq!(truncated, !spec.end);
        let frames = frames(&bytes);
        for cut in 0..=bytes.len() {
            let got = read_all(&bytes[..cut]);
            if cut == 0 {
                prop_assert!(matches!(got, Err(Error::Nothing { .. })), "cut 0: {:?}", got);
                continue;
            }
            if cut < wire::HEADER_LEN {
                prop_assert!(matches!(got, Err(Error::BadMagic { .. })), "cut {}: {:?}", cut, got);
                continue;
            }
            let (events, truncated) = got.map_err(|e| TestCaseError::fail(format!("cut {cut}: {e}")))?;
            let whole: usize = frames.iter().filter(|f| f.0 <= cut).map(|f| f.1).sum();
            prop_assert_eq!(&events[..], &all[..whole], "cut at byte {}", cut);
            prop_assert_eq!(truncated, cut < bytes.len() || !spec.end, "cut at byte {}", cut);
        }
    }
}

/// A writer that dies with replies it never read (a collector's clock
/// pongs) makes the kernel reset the connection: that is the stream ending
/// where it ends, not a read error, and every whole frame sent is kept.
#[test]
fn a_connection_reset_after_whole_frames_is_a_truncated_end() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let spec = Spec {
        threads: 2,
        batches: vec![(0, 5, 10, 0), (1, 7, 20, 0), (0, 3, 5, 0)],
        lines: false,
        end: false,
    };
    let bytes = build(&spec);
    let (mut writer, mut collector) = UnixStream::pair().unwrap();
    writer.write_all(&bytes).unwrap();
    collector
        .write_all(b"a reply the writer never reads")
        .unwrap();
    drop(writer);
    let mut reader = FrameReader::with_header(&mut collector, "reset".into())
        .and_then(EventReader::new)
        .unwrap();
    let mut events = 0;
    while let Some(_event) = reader
        .next_event()
        .expect("a reset is an end, not an error")
    {
        events += 1;
    }
    assert_eq!(events, 15);
    assert!(reader.truncated());
}

/// What the merge wrote, in order.
#[derive(Default)]
struct Written(Vec<(StreamId, Event)>);

impl TimelineSink for &mut Written {
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
        self.0.push((stream, event.clone()));
        Ok(())
    }
    fn stream_end(&mut self, _: StreamId, _: &StreamEnd) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams of threads whose events are in order per thread, delivered in
/// batches that interleave across threads and streams out of order by up
/// to `disorder_ns`, with heartbeats.
fn merge_input() -> impl Strategy<Value = (Vec<Vec<StreamItem>>, u64, bool)> {
    let thread = prop::collection::vec(1u64..400, 1..40);
    let stream = prop::collection::vec(thread, 1..4);
    (
        prop::collection::vec(stream, 1..4),
        0u64..2000,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(streams, disorder_ns, shuffle, promise)| {
            let mut rng = shuffle | 1;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let items = streams
                .iter()
                .map(|threads| deliver(threads, disorder_ns, promise, &mut next))
                .collect();
            (items, disorder_ns, promise)
        })
}

/// One stream's items: each event is delivered at its time plus a random
/// delay of at most `disorder_ns`; a heartbeat follows each delivery. With
/// `promise`, the heartbeat promises what the disorder allows (as a Python
/// recorder's do), else the merge's window must cover the disorder.
fn deliver(
    threads: &[Vec<u64>],
    disorder_ns: u64,
    promise: bool,
    next: &mut impl FnMut() -> u64,
) -> Vec<StreamItem> {
    let mut arrivals = Vec::new();
    for (tid, gaps) in threads.iter().enumerate() {
        let mut ts = 1_000_000u64;
        let mut arrive = 0u64;
        for (i, gap) in gaps.iter().enumerate() {
            ts += gap;
            // A thread hands its events over in order, so an arrival is
            // never before its predecessor's.
            arrive = arrive.max(ts + next() % (disorder_ns + 1));
            let kind = if i % 2 == 0 { Kind::Call } else { Kind::Return };
            let event = Event {
                ts_ns: ts,
                tid: tid as u64,
                kind,
                function: FunctionId(0),
                line: 0,
                mark: None,
                text: None,
            };
            arrivals.push((arrive, i, event));
        }
    }
    arrivals.sort_by_key(|(arrive, i, e)| (*arrive, e.tid, *i));
    let mut items = Vec::new();
    for (arrive, _, event) in arrivals {
        items.push(StreamItem::Event(event));
        // What this stream's clock reads now, less the disorder: no event
        // still to come is older than that.
        let complete_ns = arrive.saturating_sub(disorder_ns);
        items.push(if promise {
            StreamItem::Clock {
                monotonic_ns: arrive,
                complete_ns: Some(complete_ns),
            }
        } else {
            StreamItem::Clock {
                monotonic_ns: complete_ns,
                complete_ns: None,
            }
        });
    }
    items
}

/// What a merge of `streams` that all promise must still hold once every
/// item is in: everything every stream promised is written, so exactly the
/// events newer than the least of the streams' newest promises.
fn newer_than_every_promise(streams: &[Vec<StreamItem>]) -> usize {
    let promised = streams
        .iter()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| match i {
                    StreamItem::Clock { complete_ns, .. } => *complete_ns,
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0);
    streams
        .iter()
        .flatten()
        .filter(|i| matches!(i, StreamItem::Event(e) if e.ts_ns > promised))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_merge_of_out_of_order_streams_equals_a_sort((streams, disorder_ns, promise) in merge_input(), pick in any::<u64>()) {
        let mut written = Written::default();
        // Streams that promise need no window: give them one that would
        // hold everything, and check that the promises alone release.
        let window_ns = if promise { 1 << 60 } else { disorder_ns };
        let config = MergeConfig {
            window: std::time::Duration::from_nanos(window_ns),
            max_buffered: 1 << 20,
        };
        let mut merger = Merger::new(&mut written, config);
        let ids: Vec<StreamId> = streams.iter().map(|_| merger.add_stream(ProcessInfo::default()).unwrap()).collect();
        // Streams interleave in an arbitrary (seeded) order.
        let mut at = vec![0usize; streams.len()];
        let mut rng = pick | 1;
        while at.iter().zip(&streams).any(|(a, s)| *a < s.len()) {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let s = (rng >> 33) as usize % streams.len();
            if at[s] < streams[s].len() {
                merger.push(ids[s], streams[s][at[s]].clone()).unwrap();
                at[s] += 1;
            }
        }
        if promise {
            prop_assert_eq!(merger.buffered(), newer_than_every_promise(&streams));
        }
        for &id in &ids {
            merger.end_stream(id, StreamEnd::default(), None).unwrap();
        }
        let (_, stats) = merger.finish().unwrap();
        let late: u64 = stats.iter().map(|s| s.late).sum();
        prop_assert_eq!(late, 0);

        let mut oracle: Vec<(StreamId, Event)> = streams.iter().zip(&ids).flat_map(|(items, &id)| {
            items.iter().filter_map(move |item| match item {
                StreamItem::Event(e) => Some((id, e.clone())),
                _ => None,
            })
        }).collect();
        oracle.sort_by_key(|(id, e)| (e.ts_ns, *id, e.tid));
        let ts = |v: &[(StreamId, Event)]| v.iter().map(|(_, e)| e.ts_ns).collect::<Vec<_>>();
        prop_assert_eq!(ts(&written.0), ts(&oracle), "not in timestamp order");
        let per_thread = |v: &[(StreamId, Event)]| {
            let mut m: HashMap<(StreamId, u64), Vec<Event>> = HashMap::new();
            for (id, e) in v {
                m.entry((*id, e.tid)).or_default().push(e.clone());
            }
            m
        };
        prop_assert_eq!(per_thread(&written.0), per_thread(&oracle), "a thread's events changed");
    }
}

/// One stream's items as the reader hands them to the merge: runs of one
/// thread's events as one chunk, each followed by the newest heartbeat
/// that came with them.
fn chunked(items: &[StreamItem]) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut run: Vec<Event> = Vec::new();
    let mut clock = None;
    let flush = |run: &mut Vec<Event>, clock: &mut Option<StreamItem>, chunks: &mut Vec<Chunk>| {
        if let Some(first) = run.first() {
            let tid = first.tid;
            chunks.push(Chunk::Events {
                tid,
                events: std::mem::take(run),
            });
        }
        chunks.extend(clock.take().map(Chunk::Item));
    };
    for item in items {
        match item {
            StreamItem::Event(e) => {
                if run.first().is_some_and(|f| f.tid != e.tid) {
                    flush(&mut run, &mut clock, &mut chunks);
                }
                run.push(e.clone());
            }
            StreamItem::Clock { .. } => clock = Some(item.clone()),
            other => {
                flush(&mut run, &mut clock, &mut chunks);
                chunks.push(Chunk::Item(other.clone()));
            }
        }
    }
    flush(&mut run, &mut clock, &mut chunks);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// As above, with each stream's events pushed in batches (the way the
    /// collector feeds the merge): the output is still the sort, and a
    /// sink that takes runs (`events`) gets them in the same order.
    #[test]
    fn the_merge_of_batches_equals_a_sort((streams, disorder_ns, promise) in merge_input(), pick in any::<u64>()) {
        let mut written = Written::default();
        let window_ns = if promise { 1 << 60 } else { disorder_ns };
        let config = MergeConfig {
            window: std::time::Duration::from_nanos(window_ns),
            max_buffered: 1 << 20,
        };
        let mut merger = Merger::new(&mut written, config);
        let ids: Vec<StreamId> = streams.iter().map(|_| merger.add_stream(ProcessInfo::default()).unwrap()).collect();
        let chunks: Vec<Vec<Chunk>> = streams.iter().map(|s| chunked(s)).collect();
        let mut at = vec![0usize; chunks.len()];
        let mut rng = pick | 1;
        while at.iter().zip(&chunks).any(|(a, s)| *a < s.len()) {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let s = (rng >> 33) as usize % chunks.len();
            if at[s] < chunks[s].len() {
                merger.push_chunk(ids[s], chunks[s][at[s]].clone()).unwrap();
                at[s] += 1;
            }
        }
        if promise {
            prop_assert_eq!(merger.buffered(), newer_than_every_promise(&streams));
        }
        for &id in &ids {
            merger.end_stream(id, StreamEnd::default(), None).unwrap();
        }
        let (_, stats) = merger.finish().unwrap();
        prop_assert_eq!(stats.iter().map(|s| s.late).sum::<u64>(), 0);
        let mut oracle: Vec<(StreamId, Event)> = streams.iter().zip(&ids).flat_map(|(items, &id)| {
            items.iter().filter_map(move |item| match item {
                StreamItem::Event(e) => Some((id, e.clone())),
                _ => None,
            })
        }).collect();
        oracle.sort_by_key(|(id, e)| (e.ts_ns, *id, e.tid));
        let ts = |v: &[(StreamId, Event)]| v.iter().map(|(_, e)| e.ts_ns).collect::<Vec<_>>();
        prop_assert_eq!(ts(&written.0), ts(&oracle), "not in timestamp order");
        prop_assert_eq!(written.0.len(), oracle.len());
    }
}

/// Writes the fuzzers' seed corpus (valid streams from the real writer and
/// edge cases): `cargo test -p rtrace --test stream_props -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let decoder = root.join("frame_decoder");
    let merge = root.join("merge_input");
    std::fs::create_dir_all(&decoder).unwrap();
    std::fs::create_dir_all(&merge).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut streams = Vec::new();
    // "palette": a function met late (id 20), whose two-byte codes the
    // batches list in a palette.
    let kinds = [
        ("small", 3u64, 1u64, false, 0),
        ("threads", 40, 3, true, 0),
        ("palette", 40, 2, false, 20),
    ];
    for (name, calls, threads, lines, function) in kinds {
        let path = dir.path().join(name);
        let mut config = rtrace::Config::new(name, &path);
        config.buffer_events = 128;
        let recorder = rtrace::Recorder::start(config).unwrap();
        let function = FunctionId(function);
        recorder.intern_function(FunctionInfo {
            id: function,
            name: "main".into(),
            module: "m".into(),
            file: "m.py".into(),
            line: 1,
            native: false,
        });
        for tid in 0..threads {
            recorder.name_thread(tid, format!("t{tid}"));
            let mut buf = recorder.new_thread_buffer(tid);
            for i in 0..calls {
                let kind = if lines && i % 3 == 2 {
                    Kind::Line
                } else {
                    Kind::Call
                };
                if buf.push(RawEvent::new(rtrace::clock::ticks(), function, kind, 5)) {
                    recorder.hand_over(&mut buf);
                }
                if buf.push(RawEvent::new(
                    rtrace::clock::ticks(),
                    function,
                    Kind::Return,
                    0,
                )) {
                    recorder.hand_over(&mut buf);
                }
            }
            recorder.hand_over(&mut buf);
        }
        recorder.finish();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(decoder.join(format!("writer-{name}")), &bytes).unwrap();
        streams.push(bytes);
    }
    let cut = &streams[1][..streams[1].len() * 2 / 3];
    std::fs::write(decoder.join("writer-torn"), cut).unwrap();
    let edge: [(&str, &[u8]); 5] = [
        ("empty", b""),
        ("header-only", b"RTRACE\x01\x00"),
        ("newer-version", b"RTRACE\x09\x00"),
        ("length-4gib", b"RTRACE\x01\x00\x80\x80\x80\x80\x10"),
        (
            "varint-too-long",
            b"RTRACE\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ),
    ];
    for (name, bytes) in edge {
        std::fs::write(decoder.join(name), bytes).unwrap();
    }
    let props = build(&Spec {
        threads: 2,
        batches: vec![(0, 4, 10, 0), (1, 3, 100, 2), (0, 2, 5, 0)],
        lines: true,
        end: true,
    });
    std::fs::write(decoder.join("built-two-threads"), &props).unwrap();
    // merge_input: a control byte, a schedule, then streams (u16 length,
    // frames without the header).
    let mut joined = vec![0x06, 4, 0, 1, 1, 2];
    for s in [&streams[0], &streams[1], &props] {
        let frames = &s[wire::HEADER_LEN..];
        joined.extend((frames.len() as u16).to_le_bytes());
        joined.extend_from_slice(frames);
    }
    std::fs::write(merge.join("three-streams"), joined).unwrap();
}
