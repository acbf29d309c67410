//! User events (spans, instants, counters, flow ends) recorded through the
//! core recorder come back with their arguments from the stream file, from
//! a merged Perfetto file and in Chrome JSON.

use std::path::Path;

use rtrace::export::{ChromeJsonWriter, MergedReader, PerfettoWriter};
use rtrace::mark::{token, Payload};
use rtrace::merge::{MergeConfig, Merger};
use rtrace::timeline::{StreamEnd, TimelineSink};
use rtrace::{clock, ArgRef, ArgValue, Config, Event, EventReader, Kind, Recorder};

/// Records one thread's user events into `path`; returns the flow token.
fn record(path: &Path) -> String {
    let mut config = Config::new("marks", path);
    config.buffer_events = 1024;
    config.on_full = rtrace::OnFull::Block;
    let recorder = Recorder::start(config).unwrap();
    let mut buf = recorder.new_thread_buffer(7);
    let span = recorder.intern_name("handle").unwrap();
    let mut args = Payload::new(0, 0.0);
    args.arg("user", ArgRef::Int(42));
    args.arg("path", ArgRef::Str("/items/7"));
    recorder.push_mark(&mut buf, clock::ticks(), span, Kind::SpanBegin, Some(&args));
    let miss = recorder.intern_name("cache miss").unwrap();
    let mut args = Payload::new(0, 0.0);
    args.arg("hit", ArgRef::Bool(false));
    args.arg("ratio", ArgRef::Float(0.5));
    recorder.push_mark(&mut buf, clock::ticks(), miss, Kind::Instant, Some(&args));
    let depth = recorder.intern_name("queue_depth").unwrap();
    for v in [3.0, 5.5] {
        let value = Payload::new(0, v);
        recorder.push_mark(&mut buf, clock::ticks(), depth, Kind::Counter, Some(&value));
    }
    let (flow, token) = recorder.new_flow();
    let send = recorder.intern_name("send").unwrap();
    let out = Payload::new(flow, 0.0);
    recorder.push_mark(&mut buf, clock::ticks(), send, Kind::FlowOut, Some(&out));
    let receive = recorder.intern_name("receive").unwrap();
    let (_, parsed) = token::parse(&token).unwrap();
    let inward = Payload::new(parsed, 0.0);
    recorder.push_mark(
        &mut buf,
        clock::ticks(),
        receive,
        Kind::FlowIn,
        Some(&inward),
    );
    recorder.push_mark(&mut buf, clock::ticks(), span, Kind::SpanEnd, None);
    // Enough instants to fill several buffers, so payloads straddle
    // hand-overs.
    for i in 0..500 {
        let mut args = Payload::new(0, 0.0);
        args.arg("i", ArgRef::Int(i));
        args.arg("pad", ArgRef::Str(&"x".repeat(100)));
        recorder.push_mark(&mut buf, clock::ticks(), miss, Kind::Instant, Some(&args));
    }
    recorder.hand_over(&mut buf);
    let stats = recorder.finish();
    assert_eq!((stats.events, stats.lost), (7 + 500, 0), "{stats:?}");
    token
}

fn check(events: &[Event], names: &dyn Fn(&Event) -> String) {
    let kinds: Vec<Kind> = events.iter().take(7).map(|e| e.kind).collect();
    use Kind::*;
    assert_eq!(
        kinds,
        [SpanBegin, Instant, Counter, Counter, FlowOut, FlowIn, SpanEnd]
    );
    let args = |i: usize| events[i].mark.as_ref().unwrap().args.clone();
    assert_eq!(names(&events[0]), "handle");
    assert_eq!(args(0)[0].key, "user");
    assert_eq!(args(0)[0].value, ArgValue::Int(42));
    assert_eq!(args(0)[1].value, ArgValue::Str("/items/7".into()));
    assert_eq!(names(&events[1]), "cache miss");
    assert_eq!(args(1)[0].value, ArgValue::Bool(false));
    assert_eq!(args(1)[1].value, ArgValue::Float(0.5));
    assert_eq!(names(&events[2]), "queue_depth");
    assert_eq!(events[3].mark.as_ref().unwrap().value, 5.5);
    let out = events[4].mark.as_ref().unwrap().flow_id;
    assert!(out != 0);
    assert_eq!(events[5].mark.as_ref().unwrap().flow_id, out);
    assert!(events.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    assert_eq!(events.len(), 507);
    for (i, e) in events[7..].iter().enumerate() {
        assert_eq!(
            e.mark.as_ref().unwrap().args[0].value,
            ArgValue::Int(i as i64)
        );
    }
}

#[test]
fn marks_survive_stream_merge_and_both_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.rtrace");
    let token = record(&path);
    assert!(
        token.starts_with("00-") && token.len() == token::LEN,
        "{token}"
    );

    // The stream file.
    let mut reader = EventReader::open(&path).unwrap();
    let mut events = Vec::new();
    while let Some(e) = reader.next_event().unwrap() {
        events.push(e);
    }
    let names = |e: &Event| reader.function(e.function).unwrap().name.clone();
    check(&events, &names);

    // Merged into Perfetto and read back.
    let merged = merge(&path, PerfettoWriter::new(Vec::new())).into_inner();
    let mut merged_reader = MergedReader::new(merged.as_slice(), "merged".into());
    let events: Vec<Event> = merged_reader.by_ref().map(|e| e.unwrap().event).collect();
    let stream = rtrace::timeline::StreamId(0);
    let names = |e: &Event| {
        merged_reader
            .function(stream, e.function)
            .unwrap()
            .name
            .clone()
    };
    check(&events, &names);

    // Chrome JSON: a span with args, an instant, counters, a flow pair.
    let json = merge(&path, ChromeJsonWriter::new(Vec::new())).into_inner();
    let all: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    let user: Vec<&serde_json::Value> = all.iter().filter(|e| e["cat"] == "user").collect();
    let phases: String = user
        .iter()
        .take(8)
        .map(|e| e["ph"].as_str().unwrap())
        .collect();
    assert_eq!(phases, "BiCCisif");
    assert_eq!(user[0]["args"]["path"], "/items/7");
    assert_eq!(user[3]["args"]["value"], 5.5);
    assert_eq!(user[5]["id"], user[7]["id"]);
}

fn merge<S: TimelineSink>(path: &Path, sink: S) -> S {
    let mut merger = Merger::new(sink, MergeConfig::default());
    let mut reader = EventReader::open(path).unwrap();
    let stream = merger.add_stream(reader.hello().unwrap().into()).unwrap();
    while let Some(item) = reader.next_item().unwrap() {
        merger.push(stream, item).unwrap();
    }
    merger
        .end_stream(stream, StreamEnd::default(), None)
        .unwrap();
    merger.finish().unwrap().0
}
