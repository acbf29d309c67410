//! Text from another process made safe to show: every name that arrives in
//! a stream (session, host, argv, function and thread names) is written to
//! timelines and printed on terminals, so control characters (which could
//! move the cursor, rewrite a status line or hide text) and bidirectional
//! overrides are escaped, and lengths are capped. Names in file paths are
//! reduced further by [`file_name_part`].

use std::fmt::Write;

use crate::timeline::ProcessInfo;
use crate::writer::FunctionInfo;

/// Longest session, host or recorder description kept (in characters).
pub const MAX_NAME_CHARS: usize = 256;
/// Longest function name, module or file kept.
pub const MAX_SYMBOL_CHARS: usize = 1024;
/// Most characters of argv kept, all arguments together.
pub const MAX_ARGV_CHARS: usize = 8192;

/// `text` with control characters and bidirectional formatting characters
/// written as `\u{..}` escapes, cut to `max_chars` characters (an ellipsis
/// marks a cut). Borrowing would be cheaper for clean text; names are few.
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for (count, c) in text.chars().enumerate() {
        if count >= max_chars {
            out.push('…');
            break;
        }
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// True for characters that must not reach a terminal or a viewer as they
/// are: C0 and C1 controls, DEL, and the bidirectional embeddings,
/// overrides and isolates ("Trojan Source").
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A process description from a stream, made printable.
pub fn process(info: ProcessInfo) -> ProcessInfo {
    let mut budget = MAX_ARGV_CHARS;
    let mut argv = Vec::new();
    for arg in &info.argv {
        if budget == 0 {
            argv.push("…".to_owned());
            break;
        }
        let arg = printable(arg, budget);
        budget = budget.saturating_sub(arg.chars().count().max(1));
        argv.push(arg);
    }
    ProcessInfo {
        session: printable(&info.session, MAX_NAME_CHARS),
        host: printable(&info.host, MAX_NAME_CHARS),
        boot_id: printable(&info.boot_id, MAX_NAME_CHARS),
        recorder: printable(&info.recorder, MAX_NAME_CHARS),
        argv,
        ..info
    }
}

/// A function's intern record from a stream, made printable.
pub fn function(info: FunctionInfo) -> FunctionInfo {
    FunctionInfo {
        name: printable(&info.name, MAX_SYMBOL_CHARS),
        module: printable(&info.module, MAX_SYMBOL_CHARS),
        file: printable(&info.file, MAX_SYMBOL_CHARS),
        ..info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_kept() {
        assert_eq!(printable("svc-a ünïcode", 100), "svc-a ünïcode");
        assert_eq!(printable("a\x1b[2Jb\n", 100), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(printable("x\u{202e}y\u{9b}", 100), "x\\u{202e}y\\u{9b}");
        assert_eq!(printable("abcdef", 3), "abc…");
    }

    #[test]
    fn argv_is_capped_in_total() {
        let info = ProcessInfo {
            argv: vec!["y".repeat(MAX_ARGV_CHARS); 3],
            ..ProcessInfo::default()
        };
        let argv = process(info).argv;
        let total: usize = argv.iter().map(|a| a.chars().count()).sum();
        assert!(total <= MAX_ARGV_CHARS + 2, "{total}");
    }
}
