//! Hostile input to the real collector over real sockets: each bad peer is
//! answered with a clear message at a bounded cost, and good streams go
//! on untouched.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rtrace::{Address, Config};
use support::{ask, record, slices, stream_start, Collector};

const WAIT: Duration = Duration::from_secs(30);

fn collector(dir: &Path, extra: &[&str]) -> (Collector, std::path::PathBuf) {
    let sock = dir.join("c.sock");
    let address = format!("unix://{}", sock.display());
    let mut args = vec!["--listen", &address, "-o", "out.json", "--drain", "0.5"];
    args.extend_from_slice(extra);
    (Collector::start(dir, &args, &[]), sock)
}

#[test]
fn wrong_protocol_versions_are_refused_with_both_versions_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut collector, sock) = collector(dir.path(), &[]);
    let newer = ask(
        UnixStream::connect(&sock).unwrap(),
        &stream_start(None, "future", 7),
    );
    assert!(!newer.accepted && !newer.retry, "{newer:?}");
    assert!(
        newer.reason.contains("version 7")
            && newer
                .reason
                .contains(&format!("up to {}", rtrace::wire::FORMAT_VERSION)),
        "{newer:?}"
    );
    collector.wait_for("(session \"future\", pid 4242): ", WAIT);
    let none = ask(
        UnixStream::connect(&sock).unwrap(),
        &stream_start(None, "past", 0),
    );
    assert!(
        !none.accepted && none.reason.contains("no protocol version"),
        "{none:?}"
    );
    let mut old_header = UnixStream::connect(&sock).unwrap();
    old_header.write_all(b"RTRACE\x09\x00").unwrap();
    collector.wait_for("format version 9", WAIT);
    let report = collector.stop();
    assert!(report.contains("refused 2 connection(s)"), "{report}");
    assert!(
        report.contains("closed 1 connection(s) before their hello"),
        "{report}"
    );
}

#[test]
fn a_4_gib_length_prefix_costs_nothing_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut collector, sock) = collector(dir.path(), &[]);
    let before = collector.rss_kb();
    let mut peers = Vec::new();
    for _ in 0..20 {
        let mut huge = UnixStream::connect(&sock).unwrap();
        // A 4 GiB frame, and a 1 MiB - 1 one (within the handshake limit)
        // that never comes: neither may reserve what it announces.
        huge.write_all(b"RTRACE\x01\x00\x80\x80\x80\x80\x10")
            .unwrap();
        let mut lying = UnixStream::connect(&sock).unwrap();
        lying.write_all(b"RTRACE\x01\x00\xff\xff\x3f").unwrap();
        peers.push((huge, lying));
    }
    let line = collector.wait_for("4294967296", WAIT);
    assert!(line.contains("limit of 1048576 bytes"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    let grown = collector.rss_kb().saturating_sub(before);
    assert!(grown < 8 * 1024, "collector grew by {grown} KiB");
    collector.stop();
}

#[test]
fn a_peer_that_never_says_hello_is_closed_at_the_hello_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (mut collector, sock) = collector(dir.path(), &["--hello-timeout", "1"]);
    let mut silent = UnixStream::connect(&sock).unwrap();
    let mut trickle = UnixStream::connect(&sock).unwrap();
    trickle.write_all(b"RTR").unwrap();
    let start = Instant::now();
    let line = collector.wait_for("sent no complete hello within 1 s", WAIT);
    collector.wait_for("sent no complete hello within 1 s", WAIT);
    assert!(line.contains("unix connection #"), "{line}");
    // The peer's silence, not an I/O failure of the collector's.
    assert!(!line.contains("I/O error"), "{line}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let mut buf = [0u8; 16];
    silent.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0, "closed");
    let _ = trickle.write_all(b"ACE");
    collector.stop();
}

#[test]
fn thousands_of_idle_connections_are_refused_over_the_limit_and_cost_little() {
    let dir = tempfile::tempdir().unwrap();
    let (mut collector, sock) = collector(
        dir.path(),
        &["--max-connections", "32", "--hello-timeout", "2"],
    );
    let before = collector.rss_kb();
    let start = Instant::now();
    let idle: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    // Every connection over the limit gets the reason at once.
    let mut refused = 0;
    for mut conn in idle.iter().skip(32).take(200) {
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let reply = rtrace::wire::read_reply(&mut conn).unwrap();
        assert!(!reply.accepted && reply.retry, "{reply:?}");
        assert!(reply.reason.contains("limit 32"), "{reply:?}");
        refused += 1;
    }
    assert_eq!(refused, 200);
    collector.wait_for("too many connections (limit 32, --max-connections)", WAIT);
    let grown = collector.rss_kb().saturating_sub(before);
    assert!(grown < 32 * 1024, "collector grew by {grown} KiB");
    // The idle ones within the limit are closed at the hello timeout, and
    // then a real recorder gets in.
    collector.wait_for("sent no complete hello within 2 s", WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let mut config = Config::new("late", dir.path().join("late.spill.rtrace"));
    config.collector = Some(
        format!("unix://{}", sock.display())
            .parse::<Address>()
            .unwrap(),
    );
    let stats = record(config, 500);
    assert!(!dir.path().join("late.spill.rtrace").exists());
    assert!(start.elapsed() < Duration::from_secs(20));
    drop(idle);
    let report = collector.stop();
    let refused_line = report
        .lines()
        .find(|l| l.contains("refused") && l.contains("connection(s)"));
    assert!(refused_line.is_some_and(|l| l.contains("1968")), "{report}");
    let printed = report
        .lines()
        .filter(|l| l.contains("too many connections"))
        .count();
    assert!(printed <= 20, "{printed} refusal lines printed");
    assert_eq!(
        slices(&dir.path().join("out.json")).len() as u64,
        stats.events
    );
}

#[test]
fn garbage_and_frames_after_a_good_hello_close_only_that_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (mut collector, sock) = collector(dir.path(), &[]);
    // A connection that sends nothing (a probe, such as a second collector
    // checking whether this one listens) is said to be just that.
    drop(UnixStream::connect(&sock).unwrap());
    collector.wait_for("sent nothing before it closed", WAIT);
    let mut garbage = UnixStream::connect(&sock).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    collector.wait_for("not an rtrace stream", WAIT);
    let mut bad = UnixStream::connect(&sock).unwrap();
    let reply = ask(&mut bad, &stream_start(None, "bad", 1));
    assert!(reply.accepted);
    bad.write_all(&[0x03, 0xff, 0xff, 0xff]).unwrap();
    collector.wait_for("malformed frame", WAIT);
    let mut config = Config::new("fine", dir.path().join("fine.spill.rtrace"));
    config.collector = Some(
        format!("unix://{}", sock.display())
            .parse::<Address>()
            .unwrap(),
    );
    let stats = record(config, 1000);
    let report = collector.stop();
    let row = report.lines().find(|l| l.starts_with("fine ")).unwrap();
    assert!(row.contains("clean"), "{report}");
    let row = report.lines().find(|l| l.starts_with("bad ")).unwrap();
    assert!(row.contains("error: "), "{report}");
    assert_eq!(
        slices(&dir.path().join("out.json")).len() as u64,
        stats.events
    );
}
