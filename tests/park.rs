//! `Recorder::park`, which rtrace's fork handler calls so that `fork()`
//! finds the process single-threaded (CPython 3.12+ warns when it counts
//! more than one thread, and counts them the kernel's way: a joined thread
//! is still counted for a moment while it finishes exiting).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtrace::{Config, Recorder};

/// Names of this process's threads, from `/proc/self/task`.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// After `park` returns, the kernel no longer counts the writer thread nor
/// its tick thread, every time (200 park/unpark cycles): `park` waits for
/// them to be gone, not only joined, and for a tick in flight to return
/// (here each takes 3 ms, as a tick waiting for the GIL would).
#[test]
fn a_parked_writer_is_no_longer_one_of_the_processes_threads() {
    let dir = std::env::temp_dir().join(format!("rtrace-park-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::new("park", dir.join("park.rtrace"));
    config.flush_interval = Duration::from_millis(1);
    let recorder = Recorder::start(config).unwrap();
    recorder.set_tick(Arc::new(|| {
        std::thread::sleep(Duration::from_millis(3));
        None
    }));
    for cycle in 0..200 {
        // A new thread names itself once it runs; the tick thread starts
        // at the writer's first tick.
        let deadline = Instant::now() + Duration::from_secs(5);
        for thread in ["rtrace-writer", "rtrace-tick"] {
            while !thread_names().iter().any(|n| n == thread) {
                assert!(Instant::now() < deadline, "cycle {cycle}: no {thread}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(recorder.park(Duration::from_secs(2)), "cycle {cycle}");
        let names = thread_names();
        assert!(
            !names.iter().any(|n| n.starts_with("rtrace-")),
            "cycle {cycle}: {names:?}"
        );
        recorder.unpark().unwrap();
    }
    recorder.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}
