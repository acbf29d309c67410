//! The native Rust API records spans (nested, with arguments, from several
//! threads), instants, counters and flows into a stream file; `shutdown`
//! ends spans still open in live threads and writes their events; a second
//! recording in the same process starts clean. One test: the recording is
//! process-global.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;

use rtrace::native::{self, Options};
use rtrace::{ArgRef, ArgValue, Event, EventReader, Kind};

fn read(
    path: &Path,
) -> (
    Vec<Event>,
    HashMap<u32, String>,
    EventReader<std::io::BufReader<std::fs::File>>,
) {
    let mut reader = EventReader::open(path).unwrap();
    let mut events = Vec::new();
    while let Some(e) = reader.next_event().unwrap() {
        events.push(e);
    }
    let names = events
        .iter()
        .map(|e| {
            (
                e.function.0,
                reader.function(e.function).unwrap().name.clone(),
            )
        })
        .collect();
    (events, names, reader)
}

/// Checks that each thread's span begins and ends nest, and returns the
/// (kind, name) sequence per thread.
fn per_thread(events: &[Event], names: &HashMap<u32, String>) -> HashMap<u64, Vec<(Kind, String)>> {
    let mut out: HashMap<u64, Vec<(Kind, String)>> = HashMap::new();
    let mut stacks: HashMap<u64, Vec<u32>> = HashMap::new();
    for e in events {
        let stack = stacks.entry(e.tid).or_default();
        match e.kind {
            Kind::SpanBegin => stack.push(e.function.0),
            Kind::SpanEnd => assert_eq!(stack.pop(), Some(e.function.0), "unbalanced end"),
            _ => {}
        }
        out.entry(e.tid)
            .or_default()
            .push((e.kind, names[&e.function.0].clone()));
    }
    assert!(
        stacks.values().all(Vec::is_empty),
        "spans left open: {stacks:?}"
    );
    out
}

#[test]
fn spans_instants_counters_and_flows_from_threads_then_a_second_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("native.rtrace");

    // Nothing records yet: every call is a silent no-op, tokens still parse.
    assert!(!native::is_recording());
    drop(rtrace::span("ignored"));
    assert!(rtrace::flow_out().starts_with("00-"));

    let started = Options::new()
        .session("native-test")
        .output(&path)
        .start()
        .unwrap();
    assert_eq!(started.output, path);
    let again = rtrace::init("second").unwrap_err().to_string();
    assert!(
        again.contains("already recording session \"native-test\""),
        "{again}"
    );

    rtrace::thread_name("main-thread");
    let token;
    {
        let _outer = rtrace::span_with("request", &[("user", ArgRef::Int(42))]);
        let _inner = rtrace::span!("parse", bytes = 1024u32, ok = true, path = "/items");
        rtrace::instant!("cache miss", key = 7);
        rtrace::counter("queue_depth", 3.5);
        token = rtrace::flow_out();
    }
    rtrace::flow_in(&token).unwrap();
    assert!(matches!(
        rtrace::flow_in("nonsense"),
        Err(native::Error::BadToken(_))
    ));
    assert!(matches!(native::end(), Err(native::Error::Unbalanced)));

    // A worker that exits (hands over at exit) and one still alive at
    // shutdown with a span open (swept, the span ended by shutdown).
    std::thread::Builder::new()
        .name("worker-a".into())
        .spawn(|| {
            for i in 0..1000 {
                let _s = rtrace::span_with("job", &[("i", ArgRef::Int(i))]);
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let alive = std::thread::spawn(move || {
        rtrace::thread_name("alive");
        native::begin("never ended");
        ready_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        // After shutdown: ignored, not an error.
        assert!(native::end().is_ok());
    });
    ready_rx.recv().unwrap();

    let stats = rtrace::shutdown().unwrap();
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert!(rtrace::shutdown().is_none());
    done_tx.send(()).unwrap();
    alive.join().unwrap();

    let (events, names, reader) = read(&path);
    assert_eq!(reader.hello().unwrap().session, "native-test");
    assert!(reader.end().is_some(), "no end marker");
    let threads = per_thread(&events, &names);
    assert_eq!(threads.len(), 3);
    let thread_names: Vec<(u64, String)> = reader
        .thread_names()
        .map(|(tid, name)| (tid, name.to_owned()))
        .collect();
    let by_name = |n: &str| {
        thread_names
            .iter()
            .find(|(_, name)| name == n)
            .unwrap_or_else(|| panic!("no thread {n}: {thread_names:?}"))
            .0
    };
    let main_tid = by_name("main-thread");
    use Kind::*;
    let main: Vec<(Kind, &str)> = threads[&main_tid]
        .iter()
        .map(|(k, n)| (*k, n.as_str()))
        .collect();
    assert_eq!(
        main,
        [
            (SpanBegin, "request"),
            (SpanBegin, "parse"),
            (Instant, "cache miss"),
            (Counter, "queue_depth"),
            (FlowOut, "send"),
            (SpanEnd, "parse"),
            (SpanEnd, "request"),
            (FlowIn, "receive"),
        ]
    );
    let main_events: Vec<&Event> = events.iter().filter(|e| e.tid == main_tid).collect();
    let mark = |i: usize| main_events[i].mark.as_ref().unwrap();
    assert_eq!(mark(0).args[0].value, ArgValue::Int(42));
    let keys: Vec<&str> = mark(1).args.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["bytes", "ok", "path"]);
    assert_eq!(mark(1).args[2].value, ArgValue::Str("/items".into()));
    assert_eq!(mark(2).args[0].value, ArgValue::Int(7));
    assert_eq!(mark(3).value, 3.5);
    assert_eq!(mark(4).flow_id, mark(7).flow_id);
    assert_eq!(
        rtrace::mark::token::parse(&token).unwrap().1,
        mark(4).flow_id
    );

    assert_eq!(threads[&by_name("worker-a")].len(), 2000);
    assert_eq!(
        threads[&by_name("alive")],
        [
            (SpanBegin, "never ended".into()),
            (SpanEnd, "never ended".into())
        ]
    );

    // A second recording: fresh ids, this thread binds again.
    let second = dir.path().join("second.rtrace");
    Options::new()
        .session("again")
        .output(&second)
        .start()
        .unwrap();
    rtrace::instant("after restart");
    rtrace::shutdown().unwrap();
    let (events, names, _) = read(&second);
    let all: Vec<&str> = events
        .iter()
        .map(|e| names[&e.function.0].as_str())
        .collect();
    assert_eq!(all, ["after restart"]);
}
