//! The Perfetto writer and its reader: round trips, the sequence rules
//! Perfetto relies on, the wire form of flow ids, and the size per event.

mod export_support;

use std::collections::{HashMap, HashSet};

use export_support::{generate, play, Call, Recorded, Spec};
use prost::Message;
use rtrace::event::{FunctionId, Kind};
use rtrace::export::perfetto_format::{pb, SEQ_INCREMENTAL_STATE_CLEARED};
use rtrace::export::{replay, replay_with_progress, MergedReader, PerfettoWriter};
use rtrace::timeline::{StreamEncoder, StreamEnd, StreamId, TimelineSink};
use rtrace::Mark;
use rtrace::{Encoded, Event};

fn write(calls: &[Call]) -> Vec<u8> {
    let mut writer = PerfettoWriter::new(Vec::new());
    play(calls, &mut writer).unwrap();
    writer.into_inner()
}

fn small_spec() -> Spec {
    Spec {
        processes: 3,
        threads: 3,
        functions: 300,
        events: 20_000,
        extras: true,
        truncate_last: true,
    }
}

fn events(calls: &[Call]) -> Vec<(StreamId, Event)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Event(s, e) => Some((*s, e.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replay_reports_the_bytes_it_has_read_up_to_the_whole_file() {
    let bytes = write(&generate(&small_spec()));
    let mut reader = MergedReader::new(bytes.as_slice(), "test".into());
    let mut seen = Vec::new();
    replay_with_progress(&mut reader, &mut Recorded::default(), |read| {
        seen.push(read)
    })
    .unwrap();
    assert!(
        seen.len() > 1,
        "every few thousand items, and at the end: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen[0] > 0 && seen[0] < bytes.len() as u64, "{seen:?}");
    assert_eq!(seen.last(), Some(&(bytes.len() as u64)));
}

#[test]
fn reading_back_gives_what_the_merge_fed_in() {
    let calls = generate(&small_spec());
    let bytes = write(&calls);
    let mut reader = MergedReader::new(bytes.as_slice(), "test".into());
    let mut got = Recorded::default();
    replay(&mut reader, &mut got).unwrap();
    assert!(got.finished);
    assert!(!reader.truncated());

    let (want_events, got_events) = (events(&calls), events(&got.calls));
    assert_eq!(got_events.len(), want_events.len());
    for (i, (want, got)) in want_events.iter().zip(&got_events).enumerate() {
        assert_eq!(want, got, "event {i}");
    }
    let kinds: HashSet<Kind> = want_events.iter().map(|(_, e)| e.kind).collect();
    assert_eq!(kinds.len(), 6, "the timeline has every kind: {kinds:?}");
    let texts = |kind| {
        want_events
            .iter()
            .filter(|(_, e)| e.kind == kind && e.text.is_some())
            .count()
    };
    assert!(texts(Kind::Call) > 0 && texts(Kind::Return) > 0);

    for call in &calls {
        match call {
            Call::Process(s, info) => assert_eq!(reader.process(*s), Some(info)),
            Call::End(s, end) => assert_eq!(reader.stream_end(*s), Some(end)),
            Call::Thread(s, tid, name) => {
                assert_eq!(reader.thread_name(*s, *tid), Some(name.as_str()))
            }
            Call::Function(s, f) => assert_eq!(reader.function(*s, f.id), Some(f)),
            Call::Event(..) => {}
        }
    }
    // The replay announced each process, function and thread before use.
    let mut known = HashSet::new();
    for call in &got.calls {
        match call {
            Call::Process(s, _) => assert!(known.insert((s.0, u64::MAX))),
            Call::Function(s, f) => assert!(known.insert((s.0, u64::from(f.id.0)))),
            Call::Event(s, e) => {
                assert!(known.contains(&(s.0, u64::MAX)));
                assert!(known.contains(&(s.0, u64::from(e.function.0))));
            }
            _ => {}
        }
    }
}

/// Writes `calls` the way the collector does: each stream's events,
/// functions and thread names go through the stream's encoder (ahead of
/// the merge), and the writer gets the encoded runs.
fn write_encoded(calls: &[Call]) -> Vec<u8> {
    write_encoded_recycling(calls, false).0
}

/// The capacity that buffers given back by `write_encoded_recycling` are
/// grown to: no batch's own buffer has it.
const GIVEN_BACK_CAPACITY: usize = 1_000_003;

/// `write_encoded`, and with `recycle` each written batch is given back to
/// the writer (`recycle`), as the merge does; also returns how many
/// batches were encoded into a buffer given back (known by its capacity).
fn write_encoded_recycling(calls: &[Call], recycle: bool) -> (Vec<u8>, usize) {
    let mut writer = PerfettoWriter::new(Vec::new());
    let mut reused = 0;
    let mut encoders = HashMap::new();
    let mut run: Vec<Event> = Vec::new();
    let mut run_stream = StreamId(0);
    let mut flush = |writer: &mut PerfettoWriter<Vec<u8>>,
                     encoders: &mut HashMap<StreamId, Box<dyn StreamEncoder>>,
                     stream: StreamId,
                     run: &mut Vec<Event>| {
        if run.is_empty() {
            return;
        }
        let mut encoded = Encoded::default();
        encoders.get_mut(&stream).unwrap().encode(run, &mut encoded);
        assert_eq!(encoded.ends.len(), run.len());
        assert_eq!(encoded.ts_ns.len(), run.len());
        writer
            .encoded_events(stream, &encoded.ts_ns, &encoded.bytes)
            .unwrap();
        if encoded.bytes.capacity() == GIVEN_BACK_CAPACITY {
            reused += 1;
        }
        if recycle {
            let mut encoded = encoded;
            let more = GIVEN_BACK_CAPACITY - encoded.bytes.len();
            encoded.bytes.reserve_exact(more);
            assert_eq!(encoded.bytes.capacity(), GIVEN_BACK_CAPACITY);
            writer.recycle(encoded);
        }
        run.clear();
    };
    for call in calls {
        if let Call::Event(s, e) = call {
            if run
                .first()
                .is_some_and(|f| *s != run_stream || f.tid != e.tid)
            {
                flush(&mut writer, &mut encoders, run_stream, &mut run);
            }
            run_stream = *s;
            run.push(e.clone());
            continue;
        }
        flush(&mut writer, &mut encoders, run_stream, &mut run);
        match call {
            Call::Process(s, info) => {
                writer.process(*s, info).unwrap();
                encoders.insert(*s, writer.stream_encoder(*s).expect("an encoder"));
                assert!(
                    writer.stream_encoder(*s).is_none(),
                    "one encoder per stream"
                );
            }
            Call::Function(s, f) => {
                encoders.get_mut(s).unwrap().function(f);
                writer.function(*s, f).unwrap();
            }
            Call::Thread(s, tid, name) => {
                encoders.get_mut(s).unwrap().thread(*tid, name);
                writer.thread(*s, *tid, name).unwrap();
            }
            Call::End(s, end) => writer.stream_end(*s, end).unwrap(),
            Call::Event(..) => unreachable!(),
        }
    }
    flush(&mut writer, &mut encoders, run_stream, &mut run);
    writer.finish().unwrap();
    (writer.into_inner(), reused)
}

/// A written batch's buffer given back (`recycle`, as the merge does) is
/// filled by a later batch an encoder makes, with no allocating and
/// zeroing of a new one, and the old bytes in it change nothing: the trace
/// is the same byte for byte.
#[test]
fn buffers_given_back_are_refilled_and_change_no_byte() {
    let calls = generate(&small_spec());
    let (fresh, none) = write_encoded_recycling(&calls, false);
    let (recycled, reused) = write_encoded_recycling(&calls, true);
    assert_eq!(none, 0);
    assert!(fresh == recycled, "the trace changed");
    let batches = calls
        .iter()
        .filter(|c| matches!(c, Call::Event(..)))
        .count();
    assert!(reused > 0, "no buffer was refilled ({batches} events)");
}

/// A writer with one stream, `stream`, encoded ahead by the encoder
/// returned, and one function of it, `name`, id 3.
fn one_stream_writer(
    stream: StreamId,
    name: &str,
) -> (PerfettoWriter<Vec<u8>>, Box<dyn StreamEncoder>) {
    use rtrace::timeline::ProcessInfo;
    use rtrace::FunctionInfo;
    let mut writer = PerfettoWriter::new(Vec::new());
    let info = ProcessInfo {
        session: "s".into(),
        pid: 7,
        ..ProcessInfo::default()
    };
    writer.process(stream, &info).unwrap();
    let mut encoder = writer.stream_encoder(stream).expect("an encoder");
    let function = FunctionInfo {
        id: FunctionId(3),
        name: name.into(),
        module: String::new(),
        file: String::new(),
        line: 0,
        native: false,
    };
    encoder.function(&function);
    writer.function(stream, &function).unwrap();
    (writer, encoder)
}

/// Given-back buffers are kept only until `release_spare` (which a live
/// collector calls once idle a while, before giving its free memory back
/// to the kernel): after it, a new batch gets a new buffer.
#[test]
fn released_buffers_are_not_refilled() {
    let stream = StreamId(0);
    let (mut writer, mut encoder) = one_stream_writer(stream, "f");
    let mut refilled = |writer: &mut PerfettoWriter<Vec<u8>>, release: bool| {
        let mut given = Encoded::default();
        given.bytes.reserve_exact(GIVEN_BACK_CAPACITY);
        writer.recycle(given);
        if release {
            writer.release_spare();
        }
        let call = Event {
            ts_ns: 1_000,
            tid: 1,
            kind: Kind::Call,
            function: FunctionId(3),
            line: 0,
            mark: None,
            text: None,
        };
        let mut encoded = Encoded::default();
        encoder.encode(&[call], &mut encoded);
        encoded.bytes.capacity() == GIVEN_BACK_CAPACITY
    };
    assert!(refilled(&mut writer, false), "a kept buffer is refilled");
    assert!(!refilled(&mut writer, true), "a released buffer is not");
}

/// `write_out` puts everything written so far into the output, in whole
/// packets that read back, without finishing the trace: what a live
/// collector does every second, so that the file of streams that have gone
/// quiet is current. Without it, all of it is still in the writer's buffer.
#[test]
fn writing_out_puts_every_event_so_far_in_the_output() {
    let stream = StreamId(0);
    let written = |write_out: bool| {
        let (mut writer, mut encoder) = one_stream_writer(stream, "f");
        let events: Vec<Event> = (0..100u64)
            .flat_map(|i| {
                [(Kind::Call, 0), (Kind::Return, 5)].map(|(kind, after)| Event {
                    ts_ns: 1_000 + 10 * i + after,
                    tid: 1,
                    kind,
                    function: FunctionId(3),
                    line: 0,
                    mark: None,
                    text: None,
                })
            })
            .collect();
        let mut encoded = Encoded::default();
        encoder.encode(&events, &mut encoded);
        writer
            .encoded_events(stream, &encoded.ts_ns, &encoded.bytes)
            .unwrap();
        if write_out {
            writer.write_out().unwrap();
        }
        writer.into_inner()
    };
    assert!(
        written(false).is_empty(),
        "the writer's buffer holds it all"
    );
    let bytes = written(true);
    let mut reader = MergedReader::new(bytes.as_slice(), "test".into());
    let mut got = Recorded::default();
    replay(&mut reader, &mut got).unwrap();
    let kinds = |kind: Kind| {
        got.calls
            .iter()
            .filter(|c| matches!(c, Call::Event(_, e) if e.kind == kind))
            .count()
    };
    assert_eq!((kinds(Kind::Call), kinds(Kind::Return)), (100, 100));
    assert!(got
        .calls
        .iter()
        .any(|c| matches!(c, Call::Process(_, p) if p.pid == 7)));
}

/// Encoding ahead of the merge (`stream_encoder`) writes the same trace as
/// the writer encoding itself: the same size, and the same when read back
/// (only the sequence ids differ).
#[test]
fn stream_encoders_write_what_the_writer_writes() {
    let calls = generate(&small_spec());
    let (plain, encoded) = (write(&calls), write_encoded(&calls));
    assert_eq!(plain.len(), encoded.len());
    let replayed = |bytes: &[u8]| {
        let mut reader = MergedReader::new(bytes, "test".into());
        let mut got = Recorded::default();
        replay(&mut reader, &mut got).unwrap();
        got.calls
    };
    assert!(
        replayed(&plain) == replayed(&encoded),
        "read back differently"
    );
    check_sequences(&encoded);
}

#[test]
fn streams_and_threads_never_share_a_sequence_and_intern_before_use() {
    check_sequences(&write(&generate(&small_spec())));
}

fn check_sequences(bytes: &[u8]) {
    let trace = pb::Trace::decode(bytes).unwrap();
    let mut seen: HashSet<u32> = HashSet::new();
    let mut owner: HashMap<u32, u64> = HashMap::new(); // sequence -> process uuid
    let mut thread_of: HashMap<u32, u64> = HashMap::new(); // sequence -> thread uuid
    let mut parent: HashMap<u64, u64> = HashMap::new(); // thread uuid -> process uuid
    let mut interned: HashMap<u32, Interned> = HashMap::new();
    for packet in &trace.packet {
        let seq = packet
            .trusted_packet_sequence_id
            .expect("every packet has a sequence");
        assert_ne!(seq, 0);
        let first = seen.insert(seq);
        assert_eq!(packet.first_packet_on_sequence == Some(true), first);
        if first {
            assert_eq!(packet.sequence_flags, Some(SEQ_INCREMENTAL_STATE_CLEARED));
        }
        if let Some(d) = &packet.trace_packet_defaults {
            let track = d.track_event_defaults.as_ref().and_then(|t| t.track_uuid);
            assert!(thread_of.insert(seq, track.unwrap()).is_none());
        }
        let mut claim = |process: u64| {
            let prev = owner.insert(seq, process);
            assert!(
                prev.is_none() || prev == Some(process),
                "sequence {seq} shared"
            );
        };
        match &packet.data {
            Some(pb::trace_packet::Data::TrackDescriptor(d)) if d.process.is_some() => {
                claim(d.uuid.unwrap())
            }
            Some(pb::trace_packet::Data::TrackDescriptor(d)) if d.thread.is_some() => {
                claim(d.parent_uuid.unwrap());
                parent.insert(d.uuid.unwrap(), d.parent_uuid.unwrap());
                assert_eq!(thread_of.get(&seq), d.uuid.as_ref(), "own sequence");
            }
            _ => {}
        }
        let tables = interned.entry(seq).or_default();
        if let Some(i) = &packet.interned_data {
            tables
                .names
                .extend(i.event_names.iter().map(|n| n.iid.unwrap()));
            tables
                .locations
                .extend(i.source_locations.iter().map(|n| n.iid.unwrap()));
            tables
                .categories
                .extend(i.event_categories.iter().map(|n| n.iid.unwrap()));
        }
        if let Some(pb::trace_packet::Data::TrackEvent(e)) = &packet.data {
            use pb::track_event::{NameField, SourceLocationField};
            if let Some(NameField::NameIid(iid)) = e.name_field {
                assert!(
                    tables.names.contains(&iid),
                    "name {iid} used before interned"
                );
            }
            if let Some(SourceLocationField::SourceLocationIid(iid)) = e.source_location_field {
                assert!(tables.locations.contains(&iid));
            }
            assert!(e
                .category_iids
                .iter()
                .all(|c| tables.categories.contains(c)));
        }
    }
    let threads: HashSet<u64> = thread_of.values().copied().collect();
    assert_eq!(threads.len(), thread_of.len(), "one sequence per thread");
    assert_eq!(threads.len(), 9);
    assert_eq!(owner.values().collect::<HashSet<_>>().len(), 3);
}

/// The interned ids of one sequence.
#[derive(Default)]
struct Interned {
    names: HashSet<u64>,
    locations: HashSet<u64>,
    categories: HashSet<u64>,
}

/// Splits a message into (field number, wire type, payload).
fn fields(mut bytes: &[u8]) -> Vec<(u64, u64, &[u8])> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0;
        for i in 0.. {
            let byte = bytes[0];
            *bytes = &bytes[1..];
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        let len = match key & 7 {
            0 => {
                let start = bytes;
                varint(&mut bytes);
                out.push((key >> 3, 0, &start[..start.len() - bytes.len()]));
                continue;
            }
            1 => 8,
            2 => varint(&mut bytes) as usize,
            5 => 4,
            other => panic!("wire type {other}"),
        };
        out.push((key >> 3, key & 7, &bytes[..len]));
        bytes = &bytes[len..];
    }
    out
}

#[test]
fn flow_ids_are_unpacked_fixed64_on_the_wire() {
    let mut calls = generate(&Spec {
        processes: 1,
        threads: 1,
        functions: 5,
        events: 10,
        extras: false,
        truncate_last: false,
    });
    calls.pop(); // the stream end: the flow instant goes before it
    let mut writer = PerfettoWriter::new(Vec::new());
    for call in &calls {
        if let Call::Event(s, e) = call {
            writer.event(*s, e).unwrap();
        } else if let Call::Process(s, info) = call {
            writer.process(*s, info).unwrap();
        } else if let Call::Function(s, f) = call {
            writer.function(*s, f).unwrap();
        }
    }
    for (kind, flow_id, ts_ns) in [
        (Kind::FlowOut, 1u64 << 40, 6_000_000_000_000),
        (Kind::FlowIn, 3, 6_000_000_000_100),
    ] {
        let mark = Mark {
            flow_id,
            ..Mark::default()
        };
        let event = Event {
            ts_ns,
            tid: 4000,
            kind,
            function: FunctionId(0),
            line: 0,
            mark: Some(Box::new(mark)),
            text: None,
        };
        writer.event(StreamId(0), &event).unwrap();
    }
    writer.finish().unwrap();
    let bytes = writer.into_inner();

    let packets: Vec<&[u8]> = fields(&bytes).into_iter().map(|f| f.2).collect();
    let track_events: Vec<Vec<(u64, u64, &[u8])>> = packets
        .iter()
        .filter_map(|p| fields(p).into_iter().find(|f| f.0 == 11))
        .map(|e| fields(e.2))
        .collect();
    let flows = |n: u64| -> Vec<(u64, Vec<u8>)> {
        track_events
            .iter()
            .flat_map(|e| e.iter().filter(|f| f.0 == n).map(|f| (f.1, f.2.to_vec())))
            .collect()
    };
    let big = (1u64 << 40).to_le_bytes().to_vec();
    let three = 3u64.to_le_bytes().to_vec();
    assert_eq!(flows(47), vec![(1, big)]);
    assert_eq!(flows(48), vec![(1, three)]);

    // Category ids are unpacked varints too.
    let begin = packets
        .iter()
        .find_map(|p| {
            let event = fields(p).into_iter().find(|f| f.0 == 11)?;
            let fs = fields(event.2);
            fs.iter()
                .any(|f| f.0 == 3)
                .then_some(fs.into_iter().map(|f| (f.0, f.1)).collect())
        })
        .map(|fs: Vec<(u64, u64)>| fs)
        .expect("an event with categories");
    assert!(begin.contains(&(3, 0)));
}

/// The merge hands the writer runs of one thread's events (`events`): the
/// file is the same, byte for byte, as with one `event` call each.
#[test]
fn runs_of_events_write_the_same_bytes_as_single_events() {
    let calls = generate(&small_spec());
    let mut writer = PerfettoWriter::new(Vec::new());
    let mut run: Vec<Event> = Vec::new();
    let mut run_stream = StreamId(0);
    for call in &calls {
        if let Call::Event(s, e) = call {
            if run
                .first()
                .is_some_and(|f| *s != run_stream || f.tid != e.tid)
            {
                writer.events(run_stream, &run).unwrap();
                run.clear();
            }
            run_stream = *s;
            run.push(e.clone());
            continue;
        }
        writer.events(run_stream, &run).unwrap();
        run.clear();
        match call {
            Call::Process(s, info) => writer.process(*s, info).unwrap(),
            Call::Function(s, f) => writer.function(*s, f).unwrap(),
            Call::Thread(s, tid, name) => writer.thread(*s, *tid, name).unwrap(),
            Call::End(s, end) => writer.stream_end(*s, end).unwrap(),
            Call::Event(..) => unreachable!(),
        }
    }
    writer.events(run_stream, &run).unwrap();
    writer.finish().unwrap();
    let runs = writer.into_inner();
    assert!(runs == write(&calls), "the files differ");
}

#[test]
fn a_million_calls_and_returns_take_at_most_16_bytes_each() {
    let calls = generate(&Spec {
        processes: 2,
        threads: 4,
        functions: 400,
        events: 1_000_000,
        extras: false,
        truncate_last: false,
    });
    let n = events(&calls).len() as f64;
    let bytes = write(&calls).len() as f64;
    let per_event = bytes / n;
    eprintln!("{bytes} bytes for {n} events: {per_event:.2} bytes/event");
    assert!(per_event <= 16.0, "{per_event:.2} bytes per event");
}

#[test]
fn a_torn_last_packet_ends_the_file_as_truncated() {
    let calls = generate(&small_spec());
    let bytes = write(&calls);
    let want = events(&calls);
    for cut in [1, 2, 5, 1000] {
        let torn = &bytes[..bytes.len() - cut];
        let mut reader = MergedReader::new(torn, "torn".into());
        let mut got = Vec::new();
        while let Some(e) = reader.next_event().unwrap() {
            got.push((e.stream, e.event));
        }
        assert!(reader.truncated(), "cut {cut}");
        assert_eq!(got[..], want[..got.len()]);
        assert!(got.len() + 200 > want.len());
    }
}

#[test]
fn concatenated_files_read_as_one() {
    let calls = generate(&Spec {
        processes: 2,
        threads: 2,
        functions: 50,
        events: 2000,
        extras: true,
        truncate_last: false,
    });
    // The second file holds other processes (the same ones would rightly
    // read as one: their tracks have the same uuids).
    let others: Vec<Call> = calls
        .iter()
        .map(|call| match call {
            Call::Process(s, info) => {
                let mut info = info.clone();
                info.start_unix_ns += 1;
                Call::Process(*s, info)
            }
            other => other.clone(),
        })
        .collect();
    let mut bytes = write(&calls);
    bytes.extend(write(&others));
    let reader = MergedReader::new(bytes.as_slice(), "cat".into());
    let mut per_stream: HashMap<StreamId, usize> = HashMap::new();
    for event in reader {
        *per_stream.entry(event.unwrap().stream).or_default() += 1;
    }
    let want = events(&calls);
    let count = |s: u32| want.iter().filter(|(id, _)| id.0 == s).count();
    let expected = HashMap::from([
        (StreamId(0), count(0)),
        (StreamId(1), count(1)),
        (StreamId(2), count(0)),
        (StreamId(3), count(1)),
    ]);
    assert_eq!(per_stream, expected);
}

#[test]
fn contract_breaches_are_errors_not_panics() {
    let mut writer = PerfettoWriter::new(Vec::new());
    let event = Event {
        ts_ns: 1,
        tid: 1,
        kind: Kind::Call,
        function: FunctionId(9),
        line: 0,
        mark: None,
        text: None,
    };
    assert!(writer.event(StreamId(0), &event).is_err());
    writer
        .process(StreamId(0), &export_support::process_info(0))
        .unwrap();
    // An unknown function and a return that matches nothing still write.
    writer.event(StreamId(0), &event).unwrap();
    let stray = Event {
        kind: Kind::Return,
        function: FunctionId(3),
        ..event.clone()
    };
    writer.event(StreamId(0), &stray).unwrap();
    writer
        .stream_end(StreamId(0), &StreamEnd::default())
        .unwrap();
    assert!(writer.event(StreamId(0), &event).is_err());
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    let mut reader = MergedReader::new(bytes.as_slice(), "odd".into());
    let got: Vec<Event> = reader.by_ref().map(|e| e.unwrap().event).collect();
    assert_eq!(got, vec![event, stray]);
    let name = &reader.function(StreamId(0), FunctionId(9)).unwrap().name;
    assert_eq!(name, "<function 9>");
}

/// Writes sample traces for checking by hand or in Perfetto UI:
/// `RTRACE_EXPORT_SAMPLES=/tmp/samples cargo test -p rtrace --test
/// export_perfetto -- --ignored`.
#[test]
#[ignore]
fn write_samples() {
    let dir = std::env::var("RTRACE_EXPORT_SAMPLES").expect("RTRACE_EXPORT_SAMPLES");
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let small = generate(&small_spec());
    std::fs::write(dir.join("small.pftrace"), write(&small)).unwrap();
    let mut json = rtrace::export::ChromeJsonWriter::new(Vec::new());
    play(&small, &mut json).unwrap();
    std::fs::write(dir.join("small.json"), json.into_inner()).unwrap();
    let big = generate(&Spec {
        processes: 2,
        threads: 4,
        functions: 400,
        events: 1_000_000,
        extras: false,
        truncate_last: false,
    });
    std::fs::write(dir.join("big.pftrace"), write(&big)).unwrap();

    // Two processes joined by a flow arrow.
    let mut writer = PerfettoWriter::new(Vec::new());
    for p in 0..2 {
        let info = export_support::process_info(p);
        writer.process(StreamId(p), &info).unwrap();
        writer
            .thread(StreamId(p), u64::from(info.pid), "MainThread")
            .unwrap();
    }
    let (send, receive) = (6_000_000_000_000, 6_000_000_050_000);
    for (p, kind, ts_ns, name) in [
        (0, Kind::FlowOut, send, "send"),
        (1, Kind::FlowIn, receive, "receive"),
    ] {
        let function = rtrace::FunctionInfo {
            id: FunctionId(0),
            name: name.into(),
            module: String::new(),
            file: String::new(),
            line: 0,
            native: false,
        };
        writer.function(StreamId(p), &function).unwrap();
        let mark = Mark {
            flow_id: 7,
            ..Mark::default()
        };
        let event = Event {
            ts_ns,
            tid: 4000 + u64::from(p),
            kind,
            function: FunctionId(0),
            line: 0,
            mark: Some(Box::new(mark)),
            text: None,
        };
        writer.event(StreamId(p), &event).unwrap();
    }
    writer.finish().unwrap();
    std::fs::write(dir.join("flows.pftrace"), writer.into_inner()).unwrap();

    // Two hosts, one pid (containers often run their service as pid 1).
    let same_pid: Vec<Call> = generate(&small_spec())
        .into_iter()
        .map(|call| match call {
            Call::Process(s, mut info) => {
                info.pid = 1;
                info.ppid = 0;
                Call::Process(s, info)
            }
            Call::Thread(s, tid, name) => Call::Thread(s, tid - 4000 - u64::from(s.0) + 1, name),
            Call::Event(s, mut e) => {
                e.tid = e.tid - 4000 - u64::from(s.0) + 1;
                Call::Event(s, e)
            }
            other => other,
        })
        .collect();
    std::fs::write(dir.join("same_pid.pftrace"), write(&same_pid)).unwrap();
}

/// A user counter's track is described once per thread that uses it: the
/// merge may write one thread's first value before the value that another
/// thread encoded first (the stream's encoder runs in stream order), and a
/// value before its track's descriptor would be lost.
#[test]
fn a_counter_first_used_by_two_threads_keeps_both_first_values() {
    let stream = StreamId(0);
    let (mut writer, mut encoder) = one_stream_writer(stream, "depth");
    let counter = |tid: u64, ts_ns: u64, value: f64| Event {
        ts_ns,
        tid,
        kind: Kind::Counter,
        function: FunctionId(3),
        line: 0,
        mark: Some(Box::new(Mark {
            value,
            ..Mark::default()
        })),
        text: None,
    };
    // Stream order: thread 1's value (later in time), then thread 2's.
    let (mut late, mut early) = (Encoded::default(), Encoded::default());
    encoder.encode(&[counter(1, 2_000, 1.0)], &mut late);
    encoder.encode(&[counter(2, 1_000, 2.0)], &mut early);
    // Merge order: by time.
    for encoded in [&early, &late] {
        writer
            .encoded_events(stream, &encoded.ts_ns, &encoded.bytes)
            .unwrap();
    }
    writer.stream_end(stream, &StreamEnd::default()).unwrap();
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    let mut reader = MergedReader::new(bytes.as_slice(), "test".into());
    let mut values = Vec::new();
    while let Some(merged) = reader.next_event().unwrap() {
        if merged.event.kind == Kind::Counter {
            let value = merged.event.mark.map_or(f64::NAN, |m| m.value);
            values.push((merged.event.tid, value));
        }
    }
    assert_eq!(values, [(2, 2.0), (1, 1.0)]);
}

/// Perfetto knows a process by its pid alone: processes of two containers
/// (or hosts) with one pid get pids of their own there, parent links stay
/// inside each container, and reading back gives the processes' own pids.
#[test]
fn processes_with_one_pid_in_two_containers_stay_apart() {
    use export_support::containers;
    use rtrace::export::pids::FIRST_STAND_IN;
    let calls = containers();
    let bytes = write(&calls);
    let trace = pb::Trace::decode(bytes.as_slice()).unwrap();
    let mut shown = HashMap::new(); // process uuid -> pid given
    let mut threads = Vec::new(); // (parent uuid, pid, tid)
    let mut parents = Vec::new(); // (pid, ppid) of ProcessTree entries
    for packet in &trace.packet {
        match &packet.data {
            Some(pb::trace_packet::Data::TrackDescriptor(d)) => {
                if let Some(p) = &d.process {
                    shown.insert(d.uuid.unwrap(), p.pid.unwrap());
                }
                if let Some(t) = &d.thread {
                    threads.push((d.parent_uuid.unwrap(), t.pid.unwrap(), t.tid.unwrap()));
                }
            }
            Some(pb::trace_packet::Data::ProcessTree(tree)) => parents.extend(
                tree.processes
                    .iter()
                    .map(|p| (p.pid.unwrap(), p.ppid.unwrap())),
            ),
            _ => {}
        }
    }
    let mut pids: Vec<i32> = shown.values().copied().collect();
    pids.sort();
    let stand_in = FIRST_STAND_IN as i32;
    assert_eq!(pids, [1, 7, stand_in, stand_in + 1]);
    // Threads keep their tids, under their own process's pid.
    for (parent, pid, tid) in &threads {
        assert_eq!(shown[parent], *pid);
        assert!(*tid == 1 || *tid == 7, "{tid}");
    }
    // Each child's parent is its own container's pid 1.
    parents.sort();
    assert_eq!(parents, [(7, 1), (stand_in + 1, stand_in)]);

    let mut reader = MergedReader::new(bytes.as_slice(), "test".into());
    replay(&mut reader, &mut export_support::Recorded::default()).unwrap();
    for call in &calls {
        if let export_support::Call::Process(s, info) = call {
            assert_eq!(reader.process(*s), Some(info));
        }
    }
}

/// Files written before the description held the process's own pid, ppid,
/// pid namespace and start (the descriptor and the ProcessTree entry had
/// the own pid and ppid then) read back as before.
#[test]
fn files_whose_descriptions_lack_the_pids_read_the_descriptors() {
    use rtrace::timeline::ProcessInfo;
    // One host, so that no pid needs a stand-in (older files had none).
    let calls: Vec<Call> = generate(&small_spec())
        .into_iter()
        .map(|call| match call {
            Call::Process(s, info) => Call::Process(
                s,
                ProcessInfo {
                    host: "box".into(),
                    boot_id: "boot".into(),
                    ..info
                },
            ),
            other => other,
        })
        .collect();
    let mut trace = pb::Trace::decode(write(&calls).as_slice()).unwrap();
    let newer = [
        "pid: ",
        "ppid: ",
        "pid_namespace: ",
        "process_start_ticks: ",
    ];
    for packet in &mut trace.packet {
        if let Some(pb::trace_packet::Data::TrackDescriptor(d)) = &mut packet.data {
            if let (Some(_), Some(text)) = (&d.process, &d.description) {
                let kept: Vec<&str> = text
                    .lines()
                    .filter(|line| !newer.iter().any(|key| line.starts_with(key)))
                    .collect();
                d.description = Some(kept.join("\n"));
            }
        }
    }
    let older = trace.encode_to_vec();
    let mut reader = MergedReader::new(older.as_slice(), "test".into());
    replay(&mut reader, &mut export_support::Recorded::default()).unwrap();
    let mut processes = 0;
    for call in &calls {
        if let Call::Process(s, info) = call {
            let back = reader.process(*s).unwrap();
            assert_eq!((back.pid, back.ppid), (info.pid, info.ppid));
            assert_eq!((back.pid_namespace, back.process_start_ticks), (0, 0));
            assert_eq!(back.session, info.session);
            processes += 1;
        }
    }
    assert_eq!(processes, 3);
}
