//! `rtrace-collect merge`'s progress, on real stream files and a pipe.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rtrace::merge::MergeConfig;
use rtrace::Config;
use rtrace_collect::offline;
use rtrace_collect::status::Progress;
use support::record;

fn merge(inputs: &[PathBuf], out: &Path) -> (Vec<Progress>, offline::Merged) {
    let mut seen = Vec::new();
    let merged = offline::merge_files(
        inputs,
        || rtrace_collect::output::create(out),
        MergeConfig::default(),
        |p| seen.push(p),
    )
    .unwrap();
    (seen, merged)
}

/// Two stream files of `calls` calls each in `dir`, and their total size.
fn record_two(dir: &Path, calls: u64) -> (Vec<PathBuf>, u64) {
    let inputs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let path = dir.join(format!("p{i}.rtrace"));
            record(Config::new(format!("p{i}"), &path), calls);
            path
        })
        .collect();
    let total = inputs.iter().map(|p| p.metadata().unwrap().len()).sum();
    (inputs, total)
}

#[test]
fn progress_counts_the_bytes_read_up_to_the_inputs_total() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, total) = record_two(dir.path(), 100_000);
    let (seen, merged) = merge(&inputs, &dir.path().join("out.pftrace"));
    assert_eq!(merged.bytes.iter().sum::<u64>(), total);
    assert!(seen.len() > 4, "one report per chunk: {seen:?}");
    assert!(seen.iter().all(|p| p.total == Some(total)));
    assert!(
        seen[0].read > 0,
        "the headers are read before the first chunk"
    );
    assert!(seen.windows(2).all(|w| w[0].read <= w[1].read), "{seen:?}");
    assert!(seen[seen.len() / 2].read < total);
    assert_eq!(seen.last().unwrap().read, total);
}

#[test]
fn reading_for_stats_reports_progress_across_files_up_to_their_total() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, total) = record_two(dir.path(), 50_000);
    let mut seen = Vec::new();
    let profiles =
        rtrace_collect::profile::profile_files_with_progress(&inputs, |p| seen.push(p)).unwrap();
    assert_eq!(profiles.len(), 2);
    assert!(seen.len() > 4, "{seen:?}");
    assert!(seen.iter().all(|p| p.total == Some(total)));
    assert!(seen.windows(2).all(|w| w[0].read <= w[1].read), "{seen:?}");
    assert_eq!(seen.last().unwrap().read, total);
}

#[test]
fn a_pipe_has_no_total_and_its_bytes_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rtrace");
    record(Config::new("p", &file), 20_000);
    let bytes = std::fs::read(&file).unwrap();
    let fifo = dir.path().join("p.fifo");
    let name = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a NUL-terminated path that outlives the call.
    #[allow(unsafe_code)]
    let made = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let writer = {
        let (fifo, bytes) = (fifo.clone(), bytes.clone());
        std::thread::spawn(move || std::fs::write(fifo, bytes).unwrap())
    };
    let (seen, merged) = merge(&[fifo], &dir.path().join("out.pftrace"));
    writer.join().unwrap();
    // The report's bytes per event count what was read, as for a file.
    assert_eq!(merged.bytes, [bytes.len() as u64]);
    assert_eq!(merged.stats[0].events, 40_000);
    assert!(seen.iter().all(|p| p.total.is_none()), "{seen:?}");
    assert_eq!(seen.last().unwrap().read, bytes.len() as u64);
    let line = seen
        .last()
        .unwrap()
        .describe("merging", std::time::Duration::from_secs(3));
    assert!(
        line.starts_with("merging: ") && line.ends_with(" read, 3 s"),
        "{line}"
    );
}

/// The end instant of a stream cut short (a killed process's) carries the
/// events it delivered, as a finished stream's does: README, "Timeline
/// files". It said `events: 0`, in Chrome JSON and Perfetto alike.
#[test]
fn a_truncated_streams_end_carries_the_events_it_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.rtrace");
    record(Config::new("killed", &whole), 100_000);
    // Cut mid-frame, without its end marker: what a process killed while
    // writing leaves.
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.rtrace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut reader = rtrace::EventReader::open(&cut).unwrap();
    let mut delivered = 0u64;
    while reader.next_event().unwrap().is_some() {
        delivered += 1;
    }
    assert!(reader.truncated(), "cut mid-frame");
    assert!(delivered > 0 && delivered < 200_000, "{delivered}");

    let json = dir.path().join("cut.json");
    let (_, merged) = merge(std::slice::from_ref(&cut), &json);
    assert_eq!(merged.stats[0].events, delivered);
    let timeline: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let end = timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "rtrace: stream truncated — process died")
        .expect("the end instant");
    assert_eq!(end["args"]["events"], delivered, "{end}");
    assert_eq!(end["args"]["truncated"], true, "{end}");

    let perfetto = dir.path().join("cut.pftrace");
    merge(&[cut], &perfetto);
    let mut read = rtrace::export::MergedReader::open(&perfetto).unwrap();
    while read.next_item().unwrap().is_some() {}
    let (stream, _) = read.streams().next().unwrap();
    let end = read.stream_end(stream).unwrap();
    assert_eq!((end.events, end.truncated), (delivered, true));

    // A finished stream's end says the same number: what it delivered.
    let (_, merged) = merge(&[whole], &dir.path().join("whole.json"));
    assert_eq!(merged.stats[0].end.unwrap().events, 200_000);
}
