//! `rtrace-collect stats` on real stream files.

use std::process::Command;

use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::{clock, Config, Recorder};

fn write_stream(path: &std::path::Path, calls: u64) {
    let recorder = Recorder::start(Config::new("svc-a", path)).unwrap();
    let mut buf = recorder.new_thread_buffer(1);
    for _ in 0..calls {
        for kind in [Kind::Call, Kind::Return] {
            if buf.push(RawEvent::new(clock::ticks(), FunctionId(0), kind, 0)) {
                recorder.hand_over(&mut buf);
            }
        }
    }
    recorder.hand_over(&mut buf);
    recorder.finish();
}

#[test]
fn stats_reports_each_stream_and_flags_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.rtrace");
    let cut = dir.path().join("cut.rtrace");
    write_stream(&clean, 5000);
    write_stream(&cut, 5000);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .args(["stats"])
        .arg(&clean)
        .arg(&cut)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let clean_row = text.lines().find(|l| l.contains("clean.rtrace")).unwrap();
    assert!(
        clean_row.contains("svc-a") && clean_row.contains(" 10000 "),
        "{text}"
    );
    assert!(clean_row.contains(" clean "), "{text}");
    let cut_row = text.lines().find(|l| l.contains("cut.rtrace")).unwrap();
    assert!(cut_row.contains("truncated"), "{text}");
}

#[test]
fn wrong_usage_and_bad_files_say_what_is_wrong() {
    let out = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.rtrace");
    std::fs::write(&junk, b"junk").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .arg("stats")
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an rtrace stream"));
}
