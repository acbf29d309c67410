//! The writer thread goes on writing while the front-end's flush tick waits
//! (Python's waits for the GIL, which busy threads can keep for a whole
//! switch interval): the tick runs on a thread of its own. Here every tick
//! takes 600 ms. Meanwhile the writer drains a queue far smaller than what
//! is recorded (before, it waited for the tick, and the queue overflowed),
//! and, once the recording is idle, still writes its heartbeat snapshots
//! (at least every 250 ms), which let a collector's merge move past a quiet
//! process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtrace::event::{Kind, RawEvent};
use rtrace::{clock, Config, EventReader, FunctionInfo, Recorder, StreamItem};

#[test]
fn the_writer_keeps_writing_while_a_tick_waits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tick.rtrace");
    let mut config = Config::new("tick-waits", &path);
    config.buffer_events = 1 << 16;
    config.flush_interval = Duration::from_millis(10);
    let recorder = Recorder::start(config).unwrap();
    let f = recorder.next_function_id().unwrap();
    recorder.intern_function(FunctionInfo {
        id: f,
        name: "work".into(),
        module: "m".into(),
        file: "m.py".into(),
        line: 1,
        native: false,
    });
    recorder.set_tick(Arc::new(|| {
        std::thread::sleep(Duration::from_millis(600));
        None
    }));

    // Busy for 300 ms (a few M events/s: the queue holds ~20 ms of them),
    // then idle for 600 ms, while ticks are waiting all along.
    let mut buf = recorder.new_thread_buffer(7);
    let mut recorded = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        for _ in 0..1000 {
            for kind in [Kind::Call, Kind::Return] {
                if buf.push(RawEvent::new(clock::ticks(), f, kind, 0)) {
                    recorder.hand_over(&mut buf);
                }
                recorded += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    recorder.hand_over(&mut buf);
    std::thread::sleep(Duration::from_millis(600));
    let stats = recorder.finish();
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert_eq!(stats.events, recorded);

    let mut reader = EventReader::open(&path).unwrap();
    let mut snapshots = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        if let StreamItem::Clock { monotonic_ns, .. } = item {
            snapshots.push(monotonic_ns);
        }
    }
    let longest = snapshots
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or(u64::MAX);
    assert!(
        longest < 450_000_000,
        "{} snapshots, at most {longest} ns apart: the heartbeat stopped while a tick waited",
        snapshots.len()
    );
}
