//! The per-stream table printed when a collection or merge ends.

use rtrace::merge::StreamStats;

/// Per-stream byte counts travel separately from the merge's stats.
pub fn table(stats: &[StreamStats], bytes: &[u64]) -> String {
    let mut rows = vec![[
        "session", "pid", "host", "events", "lost", "late", "bytes", "end",
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
            s.process.host.clone(),
            s.events.to_string(),
            s.end.map_or(0, |e| e.lost).to_string(),
            s.late.to_string(),
            bytes.get(i).map_or("-".into(), u64::to_string),
            end,
        ]);
    }
    aligned(&rows)
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
