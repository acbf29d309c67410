//! The default flush tick is short (20 ms). A collector holds a stream's
//! events until the stream promises that nothing earlier will come, which
//! it does on every flush tick; so the tick bounds what the collector holds
//! in memory and how soon after the program stops the merged file is
//! complete (README, Performance: at 100 ms a collector held ~50 MB of one
//! busy process's events). Checked on the promises in the stream of a busy
//! native recording with the default options. Its own file: the recording
//! is process-global.

use std::time::{Duration, Instant};

use rtrace::native::Options;
use rtrace::{EventReader, StreamItem};

#[test]
fn a_busy_recording_promises_on_every_default_flush_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tick.rtrace");
    Options::new()
        .session("flush-tick")
        .output(&path)
        .start()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(400) {
        for _ in 0..100 {
            rtrace::instant("busy");
        }
        // Busy, but not so fast that the queue fills: a tick that finds
        // no room for a buffer makes no promise.
        std::thread::sleep(Duration::from_micros(200));
    }
    let stats = rtrace::native::shutdown().expect("the recording was active");
    assert_eq!(stats.lost, 0);

    let mut reader = EventReader::open(&path).unwrap();
    let mut promises = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        if let StreamItem::Clock {
            complete_ns: Some(promise),
            ..
        } = item
        {
            if promises.last() != Some(&promise) {
                promises.push(promise);
            }
        }
    }
    // 400 ms at 20 ms a tick: about 20 promises (4 at 100 ms).
    assert!(
        promises.len() >= 8,
        "{} promises in 400 ms of recording: {promises:?}",
        promises.len()
    );
    let mut gaps: Vec<u64> = promises
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    assert!(
        median <= 50_000_000,
        "promises a median {median} ns apart: not the 20 ms default tick ({gaps:?})"
    );
}
