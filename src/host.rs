//! Facts about the host and the process's place on it that streams carry:
//! host name, boot id, pid namespace, time-namespace offset.

/// The host name (`/proc/sys/kernel/hostname`), or "" if unknown.
pub fn name() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

/// The Linux boot id: equal on two processes of one boot of one host
/// (also across time namespaces, which shift CLOCK_MONOTONIC).
pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid` links
/// to `pid:[N]`), or 0 if unknown: with the boot id, it tells which
/// processes a pid can name (containers of one host share a boot id).
pub fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|link| parse_namespace_link(&link.to_string_lossy()))
        .unwrap_or(0)
}

fn parse_namespace_link(link: &str) -> Option<u64> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// When this process started, in clock ticks after boot (`/proc/self/stat`'s
/// starttime), or 0 if unknown: a pid reused by a later process has
/// another.
pub fn process_start_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_start_ticks(&stat))
        .unwrap_or(0)
}

/// Field 22 of a `/proc/PID/stat` line; the command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// How far this process's time namespace shifts CLOCK_MONOTONIC, in ns
/// (`/proc/self/timens_offsets`); 0 outside a time namespace or when the
/// kernel has none.
pub fn timens_monotonic_offset_ns() -> i64 {
    std::fs::read_to_string("/proc/self/timens_offsets")
        .ok()
        .and_then(|text| parse_timens_offsets(&text))
        .unwrap_or(0)
}

fn parse_timens_offsets(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("monotonic"))?;
    let mut fields = line.split_whitespace().skip(1);
    let secs: i64 = fields.next()?.parse().ok()?;
    let nanos: i64 = fields.next()?.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_monotonic_line_of_timens_offsets() {
        let text = "monotonic          -5         250\nboottime            0         0\n";
        assert_eq!(parse_timens_offsets(text), Some(-4_999_999_750));
        assert_eq!(parse_timens_offsets("boottime 1 0\n"), None);
    }

    #[test]
    fn reads_the_start_time_of_a_process_whatever_its_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    123456 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        assert_eq!(parse_start_ticks(stat), Some(123456));
        assert_eq!(parse_start_ticks("42 (a) S 1"), None);
        assert_ne!(process_start_ticks(), 0, "this test runs on Linux");
    }

    #[test]
    fn reads_the_pid_namespace_of_this_process() {
        assert_eq!(parse_namespace_link("pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_namespace_link("net:[4026531836]"), None);
        assert_ne!(pid_namespace(), 0, "this test runs on Linux");
    }
}
