//! Conversion error of recorded timestamps after minutes of recording.
//!
//! A recorder runs as in production (default flush interval, its own
//! snapshot cadence) while a probe thread, every 10 ms, reads
//! CLOCK_MONOTONIC, the raw counter and CLOCK_MONOTONIC again, and records
//! an event with that counter value. Read back, each event's converted
//! timestamp must lie within 1 µs of the two clock reads around it.
//!
//! Runs 100 s by default (its CI cost; it sleeps most of the time);
//! `RTRACE_CLOCK_PRECISION_S=3600 cargo test --release --test
//! clock_precision -- --nocapture` runs the hour.

use std::time::{Duration, Instant};

use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::{clock, Config, EventReader, Recorder, StreamItem};

/// Widest bracket of clock reads accepted around a probe's counter read.
const MAX_BRACKET_NS: u64 = 400;
const LIMIT_NS: u64 = 1_000;

fn seconds() -> u64 {
    std::env::var("RTRACE_CLOCK_PRECISION_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

/// A counter read bracketed by two CLOCK_MONOTONIC reads (narrow, retried).
fn probe() -> Option<(u64, u64, u64)> {
    for _ in 0..100 {
        let before = clock::monotonic_ns();
        let ticks = clock::ticks();
        let after = clock::monotonic_ns();
        if after - before <= MAX_BRACKET_NS {
            return Some((before, ticks, after));
        }
    }
    None
}

#[test]
fn converted_timestamps_stay_within_a_microsecond_of_clock_monotonic_for_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precision.rtrace");
    let recorder = Recorder::start(Config::new("precision", &path)).unwrap();
    let mut buf = recorder.new_thread_buffer(1);
    let mut brackets = Vec::new();
    let start = Instant::now();
    let run_for = Duration::from_secs(seconds());
    while start.elapsed() < run_for {
        if let Some((before, ticks, after)) = probe() {
            let kind = if brackets.len() % 2 == 0 {
                Kind::Call
            } else {
                Kind::Return
            };
            if buf.push(RawEvent::new(ticks, FunctionId(0), kind, 0)) {
                recorder.hand_over(&mut buf);
            }
            brackets.push((before, after));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    recorder.hand_over(&mut buf);
    recorder.finish();

    let mut reader = EventReader::open(&path).unwrap();
    let (mut errors, mut snapshots, mut k) = (Vec::new(), 0u64, 0usize);
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            StreamItem::Clock { .. } => snapshots += 1,
            StreamItem::Event(event) => {
                let (before, after) = brackets[k];
                k += 1;
                let error = before.saturating_sub(event.ts_ns) + event.ts_ns.saturating_sub(after);
                errors.push(error);
            }
            StreamItem::ClockJump(jump) => panic!("the clock jumped: {jump:?}"),
            _ => {}
        }
    }
    assert_eq!(k, brackets.len(), "every probe read back");
    errors.sort_unstable();
    let n = errors.len();
    let (max, p99) = (errors[n - 1], errors[n * 99 / 100]);
    let widths: Vec<u64> = brackets.iter().map(|(a, b)| b - a).collect();
    println!(
        "{n} probes over {} s, {snapshots} snapshots (one per {:.0} ms): conversion error \
         outside the ≤{MAX_BRACKET_NS} ns bracket: max {max} ns, p99 {p99} ns; median bracket {} ns",
        run_for.as_secs(),
        run_for.as_millis() as f64 / snapshots.max(1) as f64,
        {
            let mut w = widths.clone();
            w.sort_unstable();
            w[w.len() / 2]
        }
    );
    assert!(
        max < LIMIT_NS,
        "max conversion error {max} ns (p99 {p99} ns)"
    );
}
