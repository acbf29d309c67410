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

#[test]
fn progress_counts_the_bytes_read_up_to_the_inputs_total() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let path = dir.path().join(format!("p{i}.rtrace"));
            record(Config::new(format!("p{i}"), &path), 100_000);
            path
        })
        .collect();
    let total: u64 = inputs.iter().map(|p| p.metadata().unwrap().len()).sum();
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
    let inputs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let path = dir.path().join(format!("s{i}.rtrace"));
            record(Config::new(format!("s{i}"), &path), 50_000);
            path
        })
        .collect();
    let total: u64 = inputs.iter().map(|p| p.metadata().unwrap().len()).sum();
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

#[test]
fn the_progress_line_says_how_much_is_read_and_how_long_is_left() {
    let quarter = Progress {
        read: 1_000_000_000,
        total: Some(4_000_000_000),
    };
    assert_eq!(
        quarter.describe("merging", std::time::Duration::from_secs(10)),
        "merging: 1.0 GB of 4.0 GB read (25 %), 10 s, about 30 s left"
    );
    let all = Progress {
        read: 4_000,
        total: Some(4_000),
    };
    assert_eq!(
        all.describe("merging", std::time::Duration::from_secs(2)),
        "merging: 4.0 kB of 4.0 kB read (100 %), 2 s"
    );
    let none = Progress {
        read: 0,
        total: Some(4_000),
    };
    assert_eq!(
        none.describe("merging", std::time::Duration::from_secs(1)),
        "merging: 0 B of 4.0 kB read (0 %), 1 s"
    );
}
