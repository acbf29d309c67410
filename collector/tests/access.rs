//! Access control of the real collector over real sockets: the token on
//! TCP, loopback-only `--insecure-no-auth`, the owner-only Unix socket,
//! and names from streams escaped before they reach a terminal or a file.

mod support;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use rtrace::{Address, Config, EventReader, Token};
use support::{ask, record, slices, stream_start, Collector};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn tcp_needs_a_token_unless_insecure_on_loopback() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
            .args(args)
            .env_remove("RTRACE_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Refused before anything is bound.
    let open = "tcp://0.0.0.0:0";
    let (ok, err) = run(&["--listen", open, "-o", "/dev/null"]);
    assert!(
        !ok && err.contains("needs a token") && err.contains("RTRACE_TOKEN"),
        "{err}"
    );
    let (ok, err) = run(&["--listen", open, "-o", "/dev/null", "--insecure-no-auth"]);
    assert!(!ok && err.contains("loopback addresses only"), "{err}");
    let (ok, err) = run(&["--listen", open, "-o", "/dev/null", "--token", ""]);
    assert!(!ok && err.contains("empty"), "{err}");
    // A token and no authentication at once: the token would apply. (A
    // collector that took them would listen until killed.)
    let mut both = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .args(["--listen", "tcp://127.0.0.1:0", "-o", "/dev/null"])
        .args(["--insecure-no-auth", "--token", "t"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while both.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = both.kill();
    let out = both.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("contradict"), "{err}");
}

#[test]
fn only_the_right_token_streams_over_tcp_and_others_are_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(
        dir.path(),
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "-o",
            "out.json",
            "--drain",
            "0.5",
        ],
        &[("RTRACE_TOKEN", "s3cret-token")],
    );
    let address = collector.tcp_address();
    let hostport = address.trim_start_matches("tcp://").to_owned();

    let none = ask(
        TcpStream::connect(&hostport).unwrap(),
        &stream_start(None, "anon", 1),
    );
    assert!(
        !none.accepted && !none.retry && none.reason.contains("no token"),
        "{none:?}"
    );
    collector.wait_for("(session \"anon\", pid 4242): no token", WAIT);
    let wrong = stream_start(Some("s3cret-tokem"), "guess", 1);
    let wrong = ask(TcpStream::connect(&hostport).unwrap(), &wrong);
    assert!(
        !wrong.accepted && wrong.reason.contains("wrong token"),
        "{wrong:?}"
    );
    collector.wait_for("(session \"guess\", pid 4242): wrong token", WAIT);

    // A recorder with the wrong token spills everything to its file.
    let mut refused = Config::new("refused", dir.path().join("refused.spill.rtrace"));
    refused.collector = Some(address.parse::<Address>().unwrap());
    refused.token = Token::new("nope");
    let refused_stats = record(refused, 3000);
    let mut spill = EventReader::open(&dir.path().join("refused.spill.rtrace")).unwrap();
    let mut spilled = 0;
    while spill.next_event().unwrap().is_some() {
        spilled += 1;
    }
    assert_eq!(spilled, refused_stats.events);
    assert_eq!(spilled, 6000);

    let mut good = Config::new("good", dir.path().join("good.spill.rtrace"));
    good.collector = Some(address.parse::<Address>().unwrap());
    good.token = Token::new("s3cret-token");
    let good_stats = record(good, 3000);
    assert!(!dir.path().join("good.spill.rtrace").exists());
    let report = collector.stop();
    assert!(report.contains("refused 3 connection(s)"), "{report}");
    let row = report.lines().find(|l| l.starts_with("good ")).unwrap();
    assert!(row.contains("clean") && row.contains(" 6000 "), "{report}");
    assert!(!report.contains("s3cret"), "{report}");
    let written = slices(&dir.path().join("out.json"));
    assert_eq!(written.len() as u64, good_stats.events);
}

#[test]
fn a_token_on_a_unix_socket_is_not_needed_and_the_socket_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let address = format!("unix://{}", sock.display());
    let collector = Collector::start(
        dir.path(),
        &["--listen", &address, "-o", "out.json"],
        &[("RTRACE_TOKEN", "s3cret-token")],
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let reply = ask(
        UnixStream::connect(&sock).unwrap(),
        &stream_start(None, "local", 1),
    );
    assert!(reply.accepted, "{reply:?}");
    collector.stop();
}

#[test]
fn insecure_no_auth_on_loopback_takes_streams_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(
        dir.path(),
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "-o",
            "out.json",
            "--insecure-no-auth",
        ],
        &[],
    );
    let address = collector.tcp_address();
    let hostport = address.trim_start_matches("tcp://");
    let reply = ask(
        TcpStream::connect(hostport).unwrap(),
        &stream_start(None, "x", 1),
    );
    assert!(reply.accepted, "{reply:?}");
    collector.stop();
}

#[test]
fn names_from_streams_reach_neither_terminal_nor_timeline_with_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let address = format!("unix://{}", sock.display());
    let collector = Collector::start(
        dir.path(),
        &["--listen", &address, "-o", "out.json", "--drain", "0.5"],
        &[],
    );
    let mut config = Config::new("evil\x1b[2J\x07\u{202e}name\n", dir.path().join("s.rtrace"));
    config.collector = Some(address.parse::<Address>().unwrap());
    config.argv = vec!["prog\x1b]0;title\x07".into()];
    record(config, 10);
    let report = collector.stop();
    assert!(
        !report.contains('\x1b') && !report.contains('\x07'),
        "{report:?}"
    );
    assert!(
        report.contains(r"evil\u{1b}[2J\u{7}\u{202e}name\u{a}"),
        "{report}"
    );
    let timeline = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&timeline).unwrap();
    let text = parsed.to_string();
    assert!(text.contains(r"evil\\u{1b}[2J"), "{text}");
    for bad in ['\x1b', '\x07', '\u{202e}'] {
        assert!(
            !walk_strings(&parsed).iter().any(|s| s.contains(bad)),
            "{bad:?} in {text}"
        );
    }
}

fn walk_strings(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().flat_map(walk_strings).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(walk_strings).collect(),
        _ => Vec::new(),
    }
}
