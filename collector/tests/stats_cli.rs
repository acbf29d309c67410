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
    // A timeline (its first byte a Perfetto packet's) with no process in
    // it: said so, not summarised as nothing.
    let timeline = dir.path().join("t.pftrace");
    std::fs::write(&timeline, b"\x0a\x02\x08\x01").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .arg("stats")
        .arg(&timeline)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("t.pftrace is a timeline without any process in it"),
        "{stderr}"
    );
    // Named once: the reason names the file.
    let name = timeline.display().to_string();
    assert_eq!(stderr.matches(&name).count(), 1, "{stderr}");
}

#[test]
fn stats_reports_each_process_of_a_merged_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.rtrace");
    let cut = dir.path().join("cut.rtrace");
    write_stream(&clean, 5000);
    write_stream(&cut, 3000);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let timeline = dir.path().join("t.pftrace");
    let merged = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .arg("merge")
        .arg(&clean)
        .arg(&cut)
        .arg("-o")
        .arg(&timeline)
        .output()
        .unwrap();
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .arg("stats")
        .arg(&timeline)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("t.pftrace")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    let whole = rows.iter().find(|r| r.contains(" 10000 ")).expect(&text);
    assert!(
        whole.contains("svc-a") && whole.contains(" clean "),
        "{text}"
    );
    // A process's bytes are not its own in a timeline.
    assert!(whole.contains(" - "), "{text}");
    let cut_row = rows.iter().find(|r| !r.contains(" 10000 ")).expect(&text);
    assert!(cut_row.contains(" truncated "), "{text}");
}

#[test]
fn stats_functions_reports_calls_and_times_per_function() {
    use rtrace::FunctionInfo;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.rtrace");
    let recorder = Recorder::start(Config::new("svc-f", &path)).unwrap();
    for (id, name) in [(0, "outer"), (1, "inner")] {
        recorder.intern_function(FunctionInfo {
            id: FunctionId(id),
            name: name.into(),
            module: "m".into(),
            file: "m.py".into(),
            line: 1 + id,
            native: false,
        });
    }
    let _ = (recorder.next_function_id(), recorder.next_function_id());
    let mut buf = recorder.new_thread_buffer(1);
    let mut push = |f: u32, kind| {
        if buf.push(RawEvent::new(clock::ticks(), FunctionId(f), kind, 0)) {
            recorder.hand_over(&mut buf);
        }
    };
    for _ in 0..3 {
        push(0, Kind::Call);
        for _ in 0..4 {
            push(1, Kind::Call);
            std::thread::sleep(std::time::Duration::from_millis(1));
            push(1, Kind::Return);
        }
        push(0, Kind::Return);
    }
    recorder.hand_over(&mut buf);
    recorder.finish();
    let out = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .args(["stats", "--functions", "--json", "--top", "0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    let (outer, inner) = (row("outer"), row("inner"));
    assert_eq!(
        (outer["calls"].as_u64(), inner["calls"].as_u64()),
        (Some(3), Some(12))
    );
    assert_eq!(outer["session"], "svc-f");
    let ns = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap();
    assert!(ns(&inner, "self_ns") >= 12_000_000);
    assert_eq!(
        ns(&outer, "self_ns") + ns(&inner, "self_ns"),
        ns(&outer, "total_ns")
    );
    let table = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .args(["stats", "--functions", "--sort", "calls"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("svc-f (pid "), "{text}");
    assert!(
        lines[2].contains("m.inner") && lines[3].contains("m.outer"),
        "{text}"
    );
}
