//! A one-line status on a terminal, rewritten in place: the live
//! collector's streams and rates, an offline merge's progress. Shown only
//! when stderr is a terminal (logs and pipes get none), and cleared before
//! anything else is printed, at the latest when the line is dropped (an
//! error on its way out).

use std::io::{self, IsTerminal, Write};
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
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_345), "12.3 kB");
        assert_eq!(bytes(340_000_000), "340.0 MB");
        assert_eq!(bytes(4_100_000_000), "4.1 GB");
        assert_eq!(duration(Duration::from_secs(45)), "45 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
    }
}
