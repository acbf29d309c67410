//! A one-line status on a terminal, rewritten in place: the live
//! collector's streams and rates, the progress of long work on files
//! (merging, converting, reading for `stats`). Shown only when stderr is a
//! terminal (logs and pipes get none), and cleared before anything else is
//! printed, at the latest when the line is dropped (an error on its way
//! out).

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Erases the terminal's current line and returns to its start.
const ERASE: &str = "\r\x1b[2K";

/// A status line; `W` is stderr but for tests.
pub struct StatusLine<W: Write = io::Stderr> {
    /// `None`: not shown (not a terminal, or not wanted).
    out: Option<W>,
    started: Instant,
    /// The earliest time the next line is shown.
    next: Instant,
    every: Duration,
    shown: bool,
}

impl StatusLine {
    /// A line on stderr, if `wanted` and stderr is a terminal: first shown
    /// `after` the start, then at most every `every`.
    pub fn stderr(wanted: bool, after: Duration, every: Duration) -> StatusLine {
        let out = (wanted && io::stderr().is_terminal()).then(io::stderr);
        StatusLine::new(out, Instant::now(), after, every)
    }
}

impl<W: Write> StatusLine<W> {
    pub fn new(out: Option<W>, now: Instant, after: Duration, every: Duration) -> StatusLine<W> {
        StatusLine {
            out,
            started: now,
            next: now + after,
            every,
            shown: false,
        }
    }

    /// Whether a new line is due at `now`; cheap enough to ask often.
    pub fn due(&self, now: Instant) -> bool {
        self.out.is_some() && now >= self.next
    }

    /// Time since the line was made.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Replaces the line with `text` (if a line is due: see `due`).
    pub fn show(&mut self, now: Instant, text: &str) {
        if !self.due(now) {
            return;
        }
        if let Some(out) = &mut self.out {
            // A status line that cannot be written is not worth an error.
            let _ = write!(out, "{ERASE}{text}").and_then(|()| out.flush());
            self.shown = true;
        }
        self.next = now + self.every;
    }

    /// Erases the line, if one is shown.
    pub fn clear(&mut self) {
        if !self.shown {
            return;
        }
        if let Some(out) = &mut self.out {
            let _ = write!(out, "{ERASE}").and_then(|()| out.flush());
        }
        self.shown = false;
    }
}

impl<W: Write> Drop for StatusLine<W> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// How far long work through input files has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes read of the inputs.
    pub read: u64,
    /// Their total size; `None` when one of them is not a regular file (a
    /// pipe), whose size is not known ahead.
    pub total: Option<u64>,
}

impl Progress {
    /// The total size of `paths`; `None` if one is not a regular file (a
    /// pipe). One that does not exist counts as empty: it will be skipped.
    pub fn total_of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Option<u64> {
        paths
            .into_iter()
            .filter(|path| path.exists())
            .map(regular_file_size)
            .sum()
    }

    /// The status line of work `doing` ("merging"): "merging: 1.2 GB of
    /// 4.1 GB read (29 %), 12 s, about 29 s left" after `elapsed`.
    pub fn describe(&self, doing: &str, elapsed: Duration) -> String {
        let took = duration(elapsed);
        match self.total {
            Some(total) if total > 0 => {
                let done = self.read.min(total) as f64 / total as f64;
                let left = if done > 0.0 && done < 1.0 {
                    // Rounded up: "about 0 s left" would say it is done.
                    let left = (elapsed.as_secs_f64() * (1.0 - done) / done).ceil();
                    format!(", about {} left", duration(Duration::from_secs_f64(left)))
                } else {
                    String::new()
                };
                format!(
                    "{doing}: {} of {} read ({:.0} %), {took}{left}",
                    bytes(self.read),
                    bytes(total),
                    done * 100.0
                )
            }
            _ => format!("{doing}: {} read, {took}", bytes(self.read)),
        }
    }
}

/// The size of `path` if it is a regular file (known ahead, unlike a
/// pipe's).
pub fn regular_file_size(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then_some(meta.len())
}

/// Long work's progress on a status line: shown on a terminal once the
/// work has taken a second, updated four times a second, and erased when
/// the line is dropped.
pub struct ProgressLine {
    line: StatusLine,
    doing: &'static str,
}

impl ProgressLine {
    /// On stderr if `wanted` and it is a terminal; `doing` names the work
    /// ("merging").
    pub fn stderr(wanted: bool, doing: &'static str) -> ProgressLine {
        ProgressLine {
            line: StatusLine::stderr(wanted, Duration::from_secs(1), Duration::from_millis(250)),
            doing,
        }
    }

    pub fn update(&mut self, progress: Progress) {
        let now = Instant::now();
        if self.line.due(now) {
            let text = progress.describe(self.doing, self.line.elapsed(now));
            self.line.show(now, &text);
        }
    }

    /// Erases the line (before other output); the next update shows it
    /// again.
    pub fn clear(&mut self) {
        self.line.clear();
    }
}

/// "1.2 GB", "340 MB", "12 kB", "512 B" (powers of 1000, as file managers
/// and `ls -h --si` show sizes).
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{:.1} {unit}", n as f64 / size as f64);
        }
    }
    format!("{n} B")
}

/// "45 s", "3 min 05 s".
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(1);
    const EVERY: Duration = Duration::from_millis(250);

    fn line(terminal: bool) -> (StatusLine<Vec<u8>>, Instant) {
        let t0 = Instant::now();
        (
            StatusLine::new(terminal.then(Vec::new), t0, AFTER, EVERY),
            t0,
        )
    }

    fn written(line: &StatusLine<Vec<u8>>) -> String {
        String::from_utf8(line.out.clone().unwrap()).unwrap()
    }

    #[test]
    fn a_line_is_shown_after_the_delay_then_at_most_every_interval_and_erased() {
        let (mut status, t0) = line(true);
        status.show(t0 + Duration::from_millis(999), "too early");
        assert_eq!(written(&status), "");
        status.show(t0 + AFTER, "one");
        status.show(t0 + AFTER + Duration::from_millis(100), "too soon");
        status.show(t0 + AFTER + EVERY, "two");
        status.clear();
        status.clear(); // once only
        assert_eq!(written(&status), "\r\x1b[2Kone\r\x1b[2Ktwo\r\x1b[2K");
        assert_eq!(status.elapsed(t0 + AFTER), AFTER);
    }

    #[test]
    fn a_line_never_shown_is_not_erased() {
        let (mut status, t0) = line(true);
        status.show(t0, "before the delay");
        status.clear();
        assert_eq!(written(&status), "");
    }

    #[test]
    fn without_a_terminal_nothing_is_due_or_written() {
        let (mut status, t0) = line(false);
        assert!(!status.due(t0 + AFTER * 10));
        status.show(t0 + AFTER * 10, "text");
        status.clear();
        assert!(status.out.is_none());
    }

    #[test]
    fn the_total_is_of_regular_files_and_unknown_with_a_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, [0u8; 100]).unwrap();
        std::fs::write(&b, [0u8; 20]).unwrap();
        let missing = dir.path().join("missing");
        let total = |paths: &[&Path]| Progress::total_of(paths.iter().copied());
        assert_eq!(total(&[&a, &b, &missing]), Some(120));
        assert_eq!(total(&[&a, dir.path(), &b]), None); // not a regular file
    }

    #[test]
    fn the_progress_line_says_how_much_is_read_and_how_long_is_left() {
        let cases = [
            (
                1_000_000_000,
                Some(4_000_000_000),
                10,
                "1.0 GB of 4.0 GB read (25 %), 10 s, about 30 s left",
            ),
            (4_000, Some(4_000), 2, "4.0 kB of 4.0 kB read (100 %), 2 s"),
            (0, Some(4_000), 1, "0 B of 4.0 kB read (0 %), 1 s"),
            (2_500_000, None, 3, "2.5 MB read, 3 s"),
        ];
        for (read, total, secs, want) in cases {
            let got = Progress { read, total }.describe("merging", Duration::from_secs(secs));
            assert_eq!(got, format!("merging: {want}"));
        }
    }

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_345), "12.3 kB");
        assert_eq!(bytes(340_000_000), "340.0 MB");
        assert_eq!(bytes(4_100_000_000), "4.1 GB");
        assert_eq!(duration(Duration::from_secs(45)), "45 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
    }
}
