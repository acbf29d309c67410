//! Runs the real `rtrace-collect` binary and talks to it over real sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use std::os::unix::net::UnixStream;

use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::wire::{self, pb, Body};
use rtrace::{clock, Address, Config, Recorder};
use rtrace_collect::access::Access;
use rtrace_collect::ingest::{Arrival, Ingest};

/// A collector process and the lines of its stderr.
pub struct Collector {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Collector {
    /// Starts `rtrace-collect ARGS` in `dir` with `env`, waiting until it
    /// listens.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Collector {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"));
        command
            .args(args)
            .current_dir(dir)
            .env_remove("RTRACE_TOKEN")
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let mut collector = Collector {
            child,
            lines,
            seen: Vec::new(),
        };
        collector.wait_for("listening on", Duration::from_secs(30));
        collector
    }

    /// Waits for a stderr line containing `text`; returns it.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} on stderr; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Stops it with SIGTERM; returns the rest of its stderr.
    pub fn stop(self) -> String {
        let (status, text) = self.stop_with_status();
        assert!(status.success(), "collector failed:\n{text}");
        text
    }

    /// Stops it with SIGTERM; returns its exit status and stderr.
    pub fn stop_with_status(mut self) -> (ExitStatus, String) {
        // SAFETY: kill only sends a signal to our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        (status, self.seen.join("\n"))
    }

    /// The `tcp://host:port` it announced on stderr: started with port 0,
    /// the port the system chose (no race with other tests for a port).
    pub fn tcp_address(&mut self) -> String {
        let line = self.wait_for("listening on", Duration::from_secs(30));
        line.split(['\n', ' ', ','])
            .find(|word| word.starts_with("tcp://"))
            .map(|word| word.trim_end_matches(';').to_owned())
            .unwrap_or_else(|| panic!("no tcp:// address in {line:?}"))
    }

    /// Resident memory in KiB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `rtrace-collect ARGS` in `dir`, which must fail at start; returns
/// its stderr. One that starts after all is stopped, and the test fails.
pub fn fails_to_start(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtrace-collect"))
        .args(args)
        .current_dir(dir)
        .env_remove("RTRACE_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break ExitStatus::default();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.code().is_some_and(|code| code != 0),
        "{args:?} started: {stderr}"
    );
    stderr
}

/// Records `calls` calls into `config` (one thread); returns the stats.
pub fn record(config: Config, calls: u64) -> rtrace::Stats {
    let recorder = Recorder::start(config).unwrap();
    let mut buf = recorder.new_thread_buffer(1);
    for _ in 0..calls {
        for kind in [Kind::Call, Kind::Return] {
            if buf.push(RawEvent::new(clock::ticks(), FunctionId(0), kind, 0)) {
                recorder.hand_over(&mut buf);
            }
        }
    }
    recorder.hand_over(&mut buf);
    recorder.finish()
}

/// The start of a stream as a recorder writes it: header, an optional
/// token frame, and a hello of `version`.
pub fn stream_start(token: Option<&str>, session: &str, version: u32) -> Vec<u8> {
    let mut bytes = wire::file_header().to_vec();
    if let Some(token) = token {
        wire::auth_frame(token, &mut bytes);
    }
    let hello = pb::Hello {
        protocol_version: version,
        session: session.into(),
        pid: 4242,
        ..Default::default()
    };
    wire::encode_frame(Body::Hello(hello), &mut bytes);
    bytes
}

/// Sends `bytes` on `stream` and reads the collector's reply.
pub fn ask(mut stream: impl std::io::Read + Write, bytes: &[u8]) -> pb::HelloReply {
    stream.write_all(bytes).unwrap();
    wire::read_reply(&mut stream).unwrap()
}

/// Chrome trace JSON slices (begin/end events) of an output file.
pub fn slices(path: &Path) -> Vec<serde_json::Value> {
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let events = data
        .get("traceEvents")
        .cloned()
        .unwrap_or(data)
        .as_array()
        .cloned()
        .unwrap_or_default();
    events
        .into_iter()
        .filter(|e| matches!(e["ph"].as_str(), Some("B" | "E")))
        .collect()
}

/// An `Ingest` on a Unix socket with one recorder connected and its hello
/// answered: `peer` plays the recorder, and the test's thread the merge,
/// taking what arrives from `rx`.
pub struct IngestPeer {
    pub peer: UnixStream,
    pub rx: crossbeam_channel::Receiver<Arrival>,
    _ingest: Ingest,
    _dir: tempfile::TempDir,
}

impl IngestPeer {
    /// Connects a recorder of `session` and answers its hello.
    pub fn accepted(session: &str) -> IngestPeer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let (tx, rx) = crossbeam_channel::bounded(64);
        let ingest = Ingest::start(&[Address::Unix(path.clone())], Access::default(), tx).unwrap();
        let mut peer = UnixStream::connect(&path).unwrap();
        peer.write_all(&stream_start(None, session, 1)).unwrap();
        match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            Arrival::Hello { encoder, .. } => encoder.send(None).unwrap(),
            other => panic!("expected the stream's hello, got {other:?}"),
        }
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert!(wire::read_reply(&mut peer).unwrap().accepted);
        IngestPeer {
            peer,
            rx,
            _ingest: ingest,
            _dir: dir,
        }
    }

    /// The next arrival (waiting 30 s at most).
    pub fn arrival(&self) -> Arrival {
        self.rx.recv_timeout(Duration::from_secs(30)).unwrap()
    }
}

/// A clock snapshot, then `batches` batches of `per_batch` events of
/// thread 1 (calls and returns, in turn), as frames.
pub fn batch_frames(batches: u64, per_batch: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let snapshot = pb::ClockSnapshot {
        ticks: 1_000,
        monotonic_ns: 1_000_000,
        unix_ns: 0,
        complete_ticks: 0,
    };
    wire::encode_frame(Body::Clock(snapshot), &mut bytes);
    for batch in 0..batches {
        let events: Vec<RawEvent> = (0..per_batch)
            .map(|i| {
                let kind = if i % 2 == 0 { Kind::Call } else { Kind::Return };
                RawEvent::new(2_000 + batch * 1_000 + i, FunctionId(0), kind, 0)
            })
            .collect();
        wire::encode_frame(wire::batch_body(1, &events, 0, Vec::new()), &mut bytes);
    }
    bytes
}
