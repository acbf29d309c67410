//! The per-stream table printed when a collection or merge ends.

use rtrace::merge::StreamStats;
use rtrace::timeline::{ClockOffset, ClockStatus, ProcessInfo};

/// Per-stream byte counts travel separately from the merge's stats.
pub fn table(stats: &[StreamStats], bytes: &[u64]) -> String {
    let mut rows = vec![[
        "session",
        "pid",
        "host",
        "events",
        "lost",
        "late",
        "bytes",
        "clock offset",
        "clock jumps",
        "end",
    ]
    .map(String::from)
    .to_vec()];
    for (i, s) in stats.iter().enumerate() {
        let end = match (&s.error, s.end) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(end)) if end.truncated => "truncated".into(),
            (None, Some(_)) => "clean".into(),
            (None, None) => "open".into(),
        };
        rows.push(vec![
            s.process.session.clone(),
            s.process.pid.to_string(),
            host(&s.process),
            s.events.to_string(),
            s.end.map_or(0, |e| e.lost).to_string(),
            s.late.to_string(),
            bytes.get(i).map_or("-".into(), u64::to_string),
            s.clock.map_or("-".into(), |c| clock_offset(&c)),
            clock_jumps(s),
            end,
        ]);
    }
    aligned(&rows)
}

/// The process's host, and its pid namespace if one of its own: two
/// containers of one host name can both have a pid 1.
fn host(process: &ProcessInfo) -> String {
    match process.own_pid_namespace() {
        Some(namespace) => format!("{} (pidns {namespace})", process.host),
        None => process.host.clone(),
    }
}

/// A stream's clock offset (its clock minus the collector's) as
/// `+37.000012345 s ±14.2 µs, drift +0.021 ppm (9 samples)`, `0 (same
/// host, ±4.5 µs, 40 samples)` or `not measured`.
pub fn clock_offset(offset: &ClockOffset) -> String {
    let samples = match offset.samples {
        1 => "1 sample".to_owned(),
        n => format!("{n} samples"),
    };
    let uncertainty = micros(offset.uncertainty_ns);
    match offset.status {
        ClockStatus::Unmeasured => "not measured".into(),
        // This host's clock by its boot id, but the stream ended before
        // its first exchange: no uncertainty to show.
        ClockStatus::SameHost if offset.samples == 0 => "not measured (same host)".into(),
        ClockStatus::SameHost => format!("0 (same host, ±{uncertainty}, {samples})"),
        ClockStatus::Measured => format!(
            "{} ±{uncertainty}, drift {:+.3} ppm ({samples})",
            seconds(offset.offset_ns),
            offset.drift_ppb as f64 / 1000.0
        ),
    }
}

/// Signed nanoseconds as seconds with all nine decimals.
fn seconds(ns: i64) -> String {
    let sign = if ns < 0 { '-' } else { '+' };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09} s", abs / 1_000_000_000, abs % 1_000_000_000)
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

/// `0`, or the count with the first jump and the events clamped.
fn clock_jumps(s: &StreamStats) -> String {
    let mut text = s.clock_jumps.to_string();
    if let Some(jump) = s.first_jump {
        text.push_str(&format!(
            " (first: {} by {:.3} ms)",
            jump.kind.as_str(),
            jump.size_ns as f64 / 1e6
        ));
    }
    if s.clamped > 0 {
        text.push_str(&format!(", {} events clamped", s.clamped));
    }
    text
}

/// Left-aligned columns, two spaces apart.
pub fn aligned(rows: &[Vec<String>]) -> String {
    aligned_right(rows, 0)
}

/// Columns two spaces apart, the first `right` of them right-aligned
/// (numbers), the others left-aligned.
pub fn aligned_right(rows: &[Vec<String>], right: usize) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c < right {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sample_is_not_measured_whatever_the_host() {
        let same_host = |samples| ClockOffset {
            status: ClockStatus::SameHost,
            uncertainty_ns: 4_500,
            samples,
            ..ClockOffset::default()
        };
        assert_eq!(clock_offset(&same_host(0)), "not measured (same host)");
        assert_eq!(
            clock_offset(&same_host(40)),
            "0 (same host, ±4.5 µs, 40 samples)"
        );
        assert_eq!(clock_offset(&ClockOffset::default()), "not measured");
    }

    #[test]
    fn a_container_process_shows_its_pid_namespace_beside_its_host() {
        let stats = |pid_namespace| {
            StreamStats::new(ProcessInfo {
                session: "svc".into(),
                pid: 1,
                host: "box".into(),
                pid_namespace,
                ..ProcessInfo::default()
            })
        };
        let text = table(&[stats(0xEFFF_FFFC), stats(4026532180)], &[]);
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[1].starts_with("svc      1    box   "), "{text}");
        assert!(
            rows[2].starts_with("svc      1    box (pidns 4026532180)"),
            "{text}"
        );
    }
}
