//! A collector that cannot start changes no file: not its `-o` file
//! (which may be another running collector's timeline), and not whatever
//! is at its socket path.

mod support;

use std::time::{Duration, Instant};

use rtrace::{Address, Config};

use support::{fails_to_start, record, Collector};

const PRECIOUS: &[u8] = b"someone's timeline, not to be truncated";

#[test]
fn a_collector_that_cannot_start_leaves_its_output_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.pftrace");
    std::fs::write(&out, PRECIOUS).unwrap();
    let refusals = [
        // TCP without a token.
        vec!["--listen", "tcp://0.0.0.0:0"],
        // A socket in a directory that does not exist.
        vec!["--listen", "unix:///nonexistent-rtrace-dir/c.sock"],
        // The second address fails after the first was bound.
        vec![
            "--listen",
            "unix://c.sock",
            "--listen",
            "unix:///nonexistent-rtrace-dir/c.sock",
        ],
    ];
    for args in refusals {
        let args = [args, vec!["-o", "p.pftrace"]].concat();
        let stderr = fails_to_start(dir.path(), &args);
        assert!(!stderr.contains("Ctrl-C to finish"), "{args:?}: {stderr}");
        assert_eq!(std::fs::read(&out).unwrap(), PRECIOUS, "{args:?}: {stderr}");
    }
    assert!(!dir.path().join("c.sock").exists(), "its socket is removed");
}

#[test]
fn the_same_command_again_leaves_the_running_collectors_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--listen", "unix://c.sock", "-o", "t.pftrace"];
    let running = Collector::start(dir.path(), &args, &[]);
    let mut config = Config::new("first", dir.path().join("first.spill.rtrace"));
    config.collector = Some(Address::Unix(dir.path().join("c.sock")));
    record(config, 1_000);
    // The collector writes what it merged out within a second.
    let out = dir.path().join("t.pftrace");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&out).unwrap().len() == 0 {
        assert!(Instant::now() < deadline, "nothing written to {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = std::fs::read(&out).unwrap();

    let stderr = fails_to_start(dir.path(), &args);
    assert!(stderr.contains("already listening"), "{stderr}");
    let after = std::fs::read(&out).unwrap();
    assert!(
        after.starts_with(&before),
        "the running collector's file was cut"
    );

    let report = running.stop();
    assert!(report.contains("wrote t.pftrace"), "{report}");
    let finished = std::fs::read(&out).unwrap();
    assert!(
        finished.starts_with(&before),
        "the running collector's file was cut"
    );
    let mut timeline = rtrace::export::MergedReader::open(&out).unwrap();
    let mut events = 0;
    while timeline.next_event().unwrap().is_some() {
        events += 1;
    }
    assert_eq!(events, 2_000);
}

#[test]
fn only_a_stale_socket_is_replaced_and_any_other_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, PRECIOUS).unwrap();
    let stderr = fails_to_start(
        dir.path(),
        &["--listen", "unix://notes.txt", "-o", "t.pftrace"],
    );
    assert!(
        stderr.contains("notes.txt exists and is not a socket (a regular file)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&notes).unwrap(), PRECIOUS);

    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("inside"), PRECIOUS).unwrap();
    let stderr = fails_to_start(
        dir.path(),
        &["--listen", "unix://folder", "-o", "t.pftrace"],
    );
    assert!(
        stderr.contains("folder exists and is not a socket (a directory)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(folder.join("inside")).unwrap(), PRECIOUS);
    assert!(!dir.path().join("t.pftrace").exists());

    // A socket nobody listens on (a killed collector's) is replaced.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap());
    assert!(dir.path().join("stale.sock").exists());
    let collector = Collector::start(
        dir.path(),
        &["--listen", "unix://stale.sock", "-o", "t.pftrace"],
        &[],
    );
    std::os::unix::net::UnixStream::connect(dir.path().join("stale.sock"))
        .expect("the new collector listens there");
    collector.stop();
}
