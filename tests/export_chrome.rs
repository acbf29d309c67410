//! The Chrome trace JSON writer: valid JSON, balanced B/E per thread,
//! metadata for every process and thread, exact timestamps, and output that
//! still loads when it was cut short.

mod export_support;

use std::collections::{HashMap, HashSet};

use export_support::{generate, play, Call, Spec};
use rtrace::export::{replay, ChromeJsonWriter, MergedReader, PerfettoWriter};
use rtrace::timeline::TimelineSink;
use serde_json::Value;

fn spec() -> Spec {
    Spec {
        processes: 3,
        threads: 3,
        functions: 100,
        events: 20_000,
        extras: true,
        truncate_last: true,
    }
}

fn write(calls: &[Call]) -> Vec<u8> {
    let mut writer = ChromeJsonWriter::new(Vec::new());
    play(calls, &mut writer).unwrap();
    assert_eq!(writer.unmatched(), 0);
    writer.into_inner()
}

fn parse(bytes: &[u8]) -> Vec<Value> {
    match serde_json::from_slice(bytes).expect("valid JSON") {
        Value::Array(events) => events,
        other => panic!("not an array: {other}"),
    }
}

#[test]
fn output_is_json_with_balanced_slices_and_names() {
    let calls = generate(&spec());
    let events = parse(&write(&calls));
    let mut depth: HashMap<(u64, u64), i64> = HashMap::new();
    let mut names = HashSet::new();
    let mut phases: HashMap<String, usize> = HashMap::new();
    for event in &events {
        let ph = event["ph"].as_str().unwrap().to_owned();
        let key = (
            event["pid"].as_u64().unwrap(),
            event["tid"].as_u64().unwrap(),
        );
        match ph.as_str() {
            "B" => {
                *depth.entry(key).or_default() += 1;
                assert!(["python", "c"].contains(&event["cat"].as_str().unwrap()));
                assert!(event["args"].is_object());
            }
            "E" => {
                let d = depth.entry(key).or_default();
                *d -= 1;
                assert!(*d >= 0, "E without B on {key:?}");
            }
            "M" => {
                names.insert((event["name"].as_str().unwrap().to_owned(), key));
            }
            _ => {}
        }
        *phases.entry(ph).or_default() += 1;
    }
    assert!(depth.values().all(|&d| d == 0), "unbalanced: {depth:?}");
    // Every recorded return is an E; the E's that close what the truncated
    // stream left open say so, and are the only ones that do.
    let returns = calls
        .iter()
        .filter(|c| matches!(c, Call::Event(_, e) if e.kind.closes()))
        .count();
    let is_end = |e: &&Value| e["ph"] == "E";
    let synthetic = |e: &&Value| e["args"]["ended_by"] == "stream end";
    let ended_by_stream = events.iter().filter(is_end).filter(synthetic).count();
    assert!(
        ended_by_stream > 0,
        "the truncated stream left no call open"
    );
    assert_eq!(
        events.iter().filter(is_end).count() - ended_by_stream,
        returns
    );
    for call in &calls {
        match call {
            Call::Process(_, info) => {
                let key = (u64::from(info.pid), 0);
                assert!(names.contains(&("process_name".to_owned(), key)));
                assert!(names.contains(&("process_labels".to_owned(), key)));
            }
            Call::Thread(s, tid, _) => {
                let key = (u64::from(4000 + s.0), *tid);
                assert!(names.contains(&("thread_name".to_owned(), key)));
            }
            _ => {}
        }
    }
    for ph in ["B", "E", "i", "C", "M"] {
        assert!(phases.contains_key(ph), "no {ph} events: {phases:?}");
    }
    // log_args texts: "args" on the slice begin, "return" on its end.
    let logged = |kind: rtrace::Kind| {
        let is = |c: &&Call| matches!(c, Call::Event(_, e) if e.kind == kind && e.text.is_some());
        calls.iter().filter(is).count()
    };
    let with_text = |ph: &str, key: &str| {
        let text = "x=".to_owned();
        events
            .iter()
            .filter(|e| {
                e["ph"] == ph
                    && e["args"][key]
                        .as_str()
                        .is_some_and(|s| s.starts_with(&text))
            })
            .inspect(|e| assert!(e["args"][key].as_str().unwrap().ends_with("s='é\"\\'")))
            .count()
    };
    assert!(logged(rtrace::Kind::Call) > 0);
    assert_eq!(with_text("B", "args"), logged(rtrace::Kind::Call));
    assert_eq!(with_text("E", "return"), logged(rtrace::Kind::Return));
}

#[test]
fn timestamps_are_microseconds_with_every_nanosecond() {
    let calls = generate(&spec());
    let want: Vec<u64> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Event(_, e) if e.kind.opens() => Some(e.ts_ns),
            _ => None,
        })
        .collect();
    let text = String::from_utf8(write(&calls)).unwrap();
    let got: Vec<u64> = text
        .lines()
        .filter(|line| line.contains(r#""ph":"B""#))
        .map(|line| {
            let ts = line.split(r#""ts":"#).nth(1).unwrap();
            let ts = &ts[..ts.find(',').unwrap()];
            let (us, ns) = ts.split_once('.').unwrap();
            us.parse::<u64>().unwrap() * 1000 + ns.parse::<u64>().unwrap()
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn output_cut_short_still_loads() {
    let calls = generate(&spec());
    let mut writer = ChromeJsonWriter::new(Vec::new());
    for call in &calls[..calls.len() / 2] {
        match call {
            Call::Process(s, info) => writer.process(*s, info).unwrap(),
            Call::Function(s, f) => writer.function(*s, f).unwrap(),
            Call::Thread(s, tid, name) => writer.thread(*s, *tid, name).unwrap(),
            Call::Event(s, e) => writer.event(*s, e).unwrap(),
            Call::End(s, end) => writer.stream_end(*s, end).unwrap(),
        }
    }
    // What a live collector does every second: the file then holds every
    // element so far, though the array is not closed.
    writer.write_out().unwrap();
    let mut bytes = writer.into_inner();
    // The format allows the closing bracket to be missing; a strict parser
    // needs it back.
    bytes.extend_from_slice(b"]");
    assert!(parse(&bytes).len() > 1000);
}

#[test]
fn an_empty_timeline_is_an_empty_array() {
    let mut writer = ChromeJsonWriter::new(Vec::new());
    writer.finish().unwrap();
    assert!(parse(&writer.into_inner()).is_empty());
}

#[test]
fn a_perfetto_file_converts_to_the_same_json() {
    let calls = generate(&spec());
    let mut perfetto = PerfettoWriter::new(Vec::new());
    play(&calls, &mut perfetto).unwrap();
    let bytes = perfetto.into_inner();
    let mut reader = MergedReader::new(bytes.as_slice(), "merged".into());
    let mut converted = ChromeJsonWriter::new(Vec::new());
    replay(&mut reader, &mut converted).unwrap();
    let without_metadata = |events: Vec<Value>| -> Vec<Value> {
        events.into_iter().filter(|e| e["ph"] != "M").collect()
    };
    let got = without_metadata(parse(&converted.into_inner()));
    let want = without_metadata(parse(&write(&calls)));
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "element {i}");
    }
    assert_eq!(got.len(), want.len());
}

/// Chrome JSON knows a process by its pid alone: processes of two
/// containers with one pid get pids of their own, named with their own.
#[test]
fn processes_with_one_pid_in_two_containers_stay_apart() {
    use rtrace::export::pids::FIRST_STAND_IN;
    let elements = parse(&write(&export_support::containers()));
    let mut names: Vec<(u64, String)> = elements
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            let name = e["args"]["name"].as_str().unwrap().to_owned();
            (e["pid"].as_u64().unwrap(), name)
        })
        .collect();
    names.sort();
    let stand_in = u64::from(FIRST_STAND_IN);
    assert_eq!(
        names,
        [
            (1, "ns11 (pid 1)".to_owned()),
            (7, "ns11 (pid 7)".to_owned()),
            (stand_in, "ns12 (pid 1)".to_owned()),
            (stand_in + 1, "ns12 (pid 7)".to_owned()),
        ]
    );
    // Each process's slices are under its own pid.
    let begins: HashSet<u64> = elements
        .iter()
        .filter(|e| e["ph"] == "B")
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(begins, HashSet::from([1, 7, stand_in, stand_in + 1]));
}
