//! A relay whose central collector is unreachable spills each stream to
//! its `--spill-dir`, and says so: its report names the spill file, and a
//! stream that could not be spilled either is named with the file and
//! counted, not reported as forwarded.

mod support;

use std::path::{Path, PathBuf};

use rtrace::{Address, Config, EventReader};
use support::{fails_to_start, record, Collector};

/// Starts a relay in `dir` on `r.sock` whose central collector is not
/// there, spilling to `spill_dir`.
fn relay_to_nowhere(dir: &Path, spill_dir: &str) -> Collector {
    let args = [
        "--listen",
        "unix://r.sock",
        "--forward",
        "unix://nobody.sock",
        "--spill-dir",
        spill_dir,
        "--drain",
        "10",
    ];
    Collector::start(dir, &args, &[])
}

/// Records `calls` calls into the relay in `dir`.
fn record_into_relay(dir: &Path, session: &str, calls: u64) {
    let mut config = Config::new(session, dir.join(format!("{session}.spill.rtrace")));
    config.collector = Some(Address::Unix(dir.join("r.sock")));
    let stats = record(config, calls);
    assert_eq!(stats.lost, 0);
    assert!(
        !dir.join(format!("{session}.spill.rtrace")).exists(),
        "the relay took the stream"
    );
}

fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn a_missing_spill_dir_is_made_and_the_report_names_the_spill_file() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_to_nowhere(dir.path(), "spill/here");
    assert!(dir.path().join("spill/here").is_dir(), "made at start");
    record_into_relay(dir.path(), "app", 1_000);
    let report = relay.stop();

    let spilled = spill_files(&dir.path().join("spill/here"));
    assert_eq!(spilled.len(), 1, "{spilled:?}\n{report}");
    let mut reader = EventReader::open(&spilled[0]).unwrap();
    let mut events = 0;
    while reader.next_event().unwrap().is_some() {
        events += 1;
    }
    assert_eq!(events, 2_000);
    let name = spilled[0].file_name().unwrap().to_str().unwrap();
    let row = report
        .lines()
        .find(|l| l.starts_with("app "))
        .unwrap_or_else(|| panic!("no row for the stream:\n{report}"));
    assert!(
        row.ends_with(&format!("spilled to spill/here/{name}")),
        "{report}"
    );
    assert!(!report.contains("forwarded"), "{report}");
}

#[test]
fn a_spill_dir_that_cannot_be_made_stops_the_relay_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let args = [
        "--listen",
        "unix://r.sock",
        "--forward",
        "unix://nobody.sock",
        "--spill-dir",
        "file/spill",
    ];
    let stderr = fails_to_start(dir.path(), &args);
    assert!(
        stderr.contains("cannot create the spill directory file/spill"),
        "{stderr}"
    );
    assert!(!dir.path().join("r.sock").exists());
}

#[test]
fn a_stream_that_cannot_be_spilled_is_named_counted_and_fails_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_to_nowhere(dir.path(), "spill");
    // The directory goes away while the relay runs.
    std::fs::remove_dir(dir.path().join("spill")).unwrap();
    record_into_relay(dir.path(), "lost", 1_000);
    let (status, report) = relay.stop_with_status();

    assert_eq!(status.code(), Some(1), "{report}");
    let said = report
        .lines()
        .find(|l| l.contains("cannot write its spill file"))
        .unwrap_or_else(|| panic!("nothing said:\n{report}"));
    assert!(
        said.contains("session \"lost\"") && said.contains("spill/rtrace-relay-lost-"),
        "{said}"
    );
    let row = report
        .lines()
        .find(|l| l.starts_with("lost "))
        .unwrap_or_else(|| panic!("no row for the stream:\n{report}"));
    assert!(
        row.contains(" frames lost: cannot write its spill file spill/rtrace-relay-lost-"),
        "{row}"
    );
    assert!(
        report.contains("rtrace-collect: lost ") && report.contains("of 1 stream(s)"),
        "{report}"
    );
}
