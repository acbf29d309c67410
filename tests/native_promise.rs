//! A native recording sweeps its threads on every flush tick, with either
//! policy when the queue is full: an idle thread's events reach the stream
//! without waiting for its next event, and the stream promises what it has
//! sent in full, so that a collector writes them out at once (see
//! `Recorder::set_tick`). With "block" too: the sweep runs on a thread of
//! its own, so a thread waiting for room (holding its slot lock) cannot
//! keep the writer from making that room. Its own file: the recording is
//! process-global, so both policies run in one test, one after the other.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rtrace::native::Options;
use rtrace::{EventReader, OnFull, StreamItem};

/// The time of the instant named `name`, and the newest promise, in what
/// the (still growing) stream file holds so far.
fn seen(path: &Path, name: &str) -> (Option<u64>, Option<u64>) {
    let (mut instant, mut promise) = (None, None);
    let Ok(mut reader) = EventReader::open(path) else {
        return (instant, promise);
    };
    // A frame cut off at the end of what was written reads as an error.
    while let Ok(Some(item)) = reader.next_item() {
        match item {
            StreamItem::Event(e) if reader.function(e.function).is_some_and(|f| f.name == name) => {
                instant = Some(e.ts_ns);
            }
            StreamItem::Clock {
                complete_ns: Some(c),
                ..
            } => promise = Some(c),
            _ => {}
        }
    }
    (instant, promise)
}

#[test]
fn an_idle_threads_events_are_swept_and_promised_on_the_flush_tick() {
    for on_full in [OnFull::Drop, OnFull::Block] {
        idle_thread_swept_and_promised(on_full);
    }
}

fn idle_thread_swept_and_promised(on_full: OnFull) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("native.rtrace");
    Options::new()
        .session("native-promise")
        .output(&path)
        .on_full(on_full)
        .start()
        .unwrap();

    let (recorded, wait) = mpsc::channel();
    let (release, idle) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        rtrace::instant("before idling");
        recorded.send(()).unwrap();
        // Idle: no next event that would hand the buffer over.
        idle.recv().unwrap();
    });
    wait.recv().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let (instant, promise) = loop {
        let (instant, promise) = seen(&path, "before idling");
        if matches!((instant, promise), (Some(i), Some(p)) if p > i) || Instant::now() > deadline {
            break (instant, promise);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    release.send(()).unwrap();
    worker.join().unwrap();
    rtrace::native::shutdown();

    let instant = instant.unwrap_or_else(|| {
        panic!("{on_full:?}: the idle thread's instant never reached the stream")
    });
    let promise = promise.unwrap_or_else(|| panic!("{on_full:?}: the stream made no promise"));
    assert!(
        promise > instant,
        "{on_full:?}: the newest promise ({promise} ns) is not past the idle thread's event ({instant} ns)"
    );
}
