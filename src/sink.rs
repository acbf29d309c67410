//! Where the writer's bytes go: a stream file, or a collector socket that
//! falls back to a local spill file while the collector is unreachable.
//!
//! Every destination starts with the file header and the stream's intern
//! preamble (hello, functions, thread names) and a fresh clock snapshot, so
//! that each connection, and the spill file, is a complete stream by
//! itself.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::clocksync::{Duplex, LocalClock, SyncConfig, SyncLink, Timekeeper};
use crate::wire;
use crate::{Error, Result};

/// A destination for encoded frames.
pub trait Sink: Send {
    /// Writes an intern frame (hello, function, thread): one that every
    /// new connection or file must repeat before other frames.
    fn write_intern(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Writes any other frame (batches, snapshots, end).
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Pushes buffered bytes to the OS, so a killed process keeps them
    /// (rtrace's own sinks buffer nothing: each frame goes out whole at
    /// once, so that a failed write is known at the frame it hit).
    fn flush(&mut self) -> io::Result<()>;
    /// Names the sink in messages ("/tmp/x.rtrace").
    fn describe(&self) -> String;
    /// Runs the clock exchange with a collector if one is due (see
    /// `clocksync`); a no-op for sinks without one.
    fn sync_clock(&mut self) {}
    /// Like `sync_clock`, just before the stream's end marker: makes sure
    /// a short stream gets its samples (see `SyncLink::run_at_end`).
    fn sync_clock_at_end(&mut self) {}
    /// Ends the stream's connection, if it has one, after everything
    /// written was flushed.
    fn close(&mut self) {}
}

/// A file of frames, each written whole with one `write_all` and no
/// buffering in this process: a frame the call returned from is the OS's
/// (a killed process keeps it), and a frame that fails (disk full) is cut
/// off again, so the file ends at its last whole frame and exactly the
/// frames that failed are missing — which the writer counts as lost.
#[derive(Debug)]
struct FrameFile {
    file: File,
    /// Bytes of whole frames in the file.
    len: u64,
}

impl FrameFile {
    /// Creates (or truncates) `path` and writes `start` (header and
    /// preamble).
    fn create(path: &Path, start: &[u8]) -> io::Result<FrameFile> {
        let mut out = FrameFile {
            file: File::create(path)?,
            len: 0,
        };
        out.append(start)?;
        Ok(out)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Best effort: a torn frame would still be skipped by readers.
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(SeekFrom::Start(self.len));
                Err(e)
            }
        }
    }
}

/// A stream file: the header, then frames (see `FrameFile`).
#[derive(Debug)]
pub struct FileSink {
    out: FrameFile,
    path: PathBuf,
}

impl FileSink {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: &Path) -> Result<FileSink> {
        let out = FrameFile::create(path, &wire::file_header()).map_err(|source| Error::Open {
            path: path.to_owned(),
            error: source,
        })?;
        Ok(FileSink {
            out,
            path: path.to_owned(),
        })
    }
}

impl Sink for FileSink {
    fn write_intern(&mut self, frame: &[u8]) -> io::Result<()> {
        self.out.append(frame)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.out.append(frame)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A collector's address: `unix:///path/to.sock` or `tcp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Address> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(Error::Config(format!(
                    "{s:?} has no socket path; use unix:///path/to.sock"
                )));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(hostport) = s.strip_prefix("tcp://") {
            let Some((host, port)) = hostport.rsplit_once(':').filter(|(h, _)| !h.is_empty())
            else {
                return Err(Error::Config(format!(
                    "{s:?} is not host:port; use e.g. tcp://127.0.0.1:9876"
                )));
            };
            if port.parse::<u16>().is_err() {
                let why = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                    "is out of range (ports go up to 65535)"
                } else {
                    "is not a port number"
                };
                return Err(Error::Config(format!(
                    "{s:?}: port {port:?} {why}; use e.g. tcp://{host}:9876"
                )));
            }
            return Ok(Address::Tcp(hostport.to_owned()));
        }
        Err(Error::Config(format!(
            "collector address {s:?} must start with unix:// or tcp:// (e.g. unix:///tmp/rtrace.sock, tcp://127.0.0.1:9876)"
        )))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Tcp(hostport) => write!(f, "tcp://{hostport}"),
        }
    }
}

/// A shared secret that proves a recorder may stream to a collector. Its
/// `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token, or `None` for an empty one.
    pub fn new(token: impl Into<String>) -> Option<Token> {
        let token = token.into();
        (!token.is_empty()).then_some(Token(token))
    }

    /// `$RTRACE_TOKEN`, when set and not empty.
    pub fn from_env() -> Option<Token> {
        std::env::var("RTRACE_TOKEN").ok().and_then(Token::new)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How long a connection attempt or a stalled write may take before the
/// collector counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a recorder waits for the collector's `HelloReply`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Unbuffered on purpose: the writer hands over whole frames, and a write
/// error must be seen at the frame it happened to, so that frame can be
/// spilled (a buffered writer would lose what it held when it fails).
enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Connection {
    fn open(address: &Address) -> io::Result<Connection> {
        match address {
            Address::Unix(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
                Ok(Connection::Unix(stream))
            }
            Address::Tcp(hostport) => {
                let addr = hostport.to_socket_addrs()?.next().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{hostport} resolves to nothing"),
                    )
                })?;
                let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
                stream.set_nodelay(true)?;
                // Pongs' arrival times (see `rxstamp`); the exchange falls
                // back to read times without them.
                let _ = crate::rxstamp::enable(&stream);
                Ok(Connection::Tcp(stream))
            }
        }
    }

    fn out(&mut self) -> &mut dyn Write {
        match self {
            Connection::Unix(w) => w,
            Connection::Tcp(w) => w,
        }
    }

    fn duplex(&mut self) -> &mut dyn Duplex {
        match self {
            Connection::Unix(s) => s,
            Connection::Tcp(s) => s,
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Connection::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Connection::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    fn input(&mut self) -> &mut dyn Read {
        match self {
            Connection::Unix(r) => r,
            Connection::Tcp(r) => r,
        }
    }
}

/// Why a connection attempt did not give a connection.
enum Attempt {
    /// Down, stalled or broken: try again after the backoff.
    Failed,
    /// The collector answered the hello with a refusal.
    Refused(wire::pb::HelloReply),
}

/// How long `close` waits for the collector to finish reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Streams to a collector; while it is unreachable, writes to a spill file
/// (announced once on stderr) and retries with backoff. On each connection
/// it runs the clock exchange (`sync_clock`) if the collector offers it.
pub struct CollectorSink {
    address: Address,
    connection: Option<Connection>,
    /// The clock exchange on the current connection.
    link: Option<SyncLink>,
    sync: SyncConfig,
    timekeeper: Box<dyn Timekeeper>,
    next_attempt: Instant,
    backoff: Duration,
    spill_path: PathBuf,
    spill: Option<FrameFile>,
    spill_failed: bool,
    /// True while frames go to the spill file (a fresh snapshot goes first
    /// on each switch, so its batches are covered).
    spilling: bool,
    preamble: Vec<u8>,
    /// Sent in an `Auth` frame on every connection (never to the spill).
    token: Option<Token>,
    /// The collector's last refusal, for the spill warning.
    refusal: Option<String>,
    /// Refused for good (wrong token, protocol): no more attempts.
    gave_up: bool,
    /// The spill warning was printed.
    warned: bool,
}

impl CollectorSink {
    /// A recorder's sink for `address` with the default clock exchange;
    /// connects at the first write.
    pub fn new(address: Address, spill_path: PathBuf) -> CollectorSink {
        CollectorSink::with_clock(
            address,
            spill_path,
            SyncConfig::default(),
            Box::new(LocalClock),
        )
    }

    /// A sink whose clock exchange follows `sync`, and whose snapshots and
    /// samples `timekeeper` provides (a relay forwards another process's).
    pub fn with_clock(
        address: Address,
        spill_path: PathBuf,
        sync: SyncConfig,
        timekeeper: Box<dyn Timekeeper>,
    ) -> CollectorSink {
        CollectorSink {
            address,
            connection: None,
            link: None,
            sync,
            timekeeper,
            next_attempt: Instant::now(),
            backoff: FIRST_RETRY,
            spill_path,
            spill: None,
            spill_failed: false,
            spilling: false,
            preamble: Vec::new(),
            token: None,
            refusal: None,
            gave_up: false,
            warned: false,
        }
    }

    /// Sends `token` to the collector on every connection (see `Auth` in
    /// `proto/rtrace.proto`).
    pub fn with_token(mut self, token: Option<Token>) -> CollectorSink {
        self.token = token;
        self
    }

    /// The spill file, once it was created (some of the stream went there
    /// because the collector was unreachable or refused it); `None` while
    /// everything went to the collector, or when it could not be created.
    pub fn spill_file(&self) -> Option<&Path> {
        self.spill.as_ref().map(|_| self.spill_path.as_path())
    }

    /// The stream's start; with `auth`, the token frame before the hello.
    fn start_of_stream(&mut self, auth: bool) -> Vec<u8> {
        let mut bytes = wire::file_header().to_vec();
        if let (true, Some(token)) = (auth, &self.token) {
            wire::auth_frame(token.expose(), &mut bytes);
        }
        bytes.extend_from_slice(&self.preamble);
        self.timekeeper.snapshot_frame(&mut bytes);
        bytes
    }

    fn drop_connection(&mut self) {
        self.connection = None;
        self.link = None;
    }

    /// The connection broke (a write or the clock exchange failed): what
    /// follows is spilled until the next attempt, after the backoff, as
    /// for a collector that went away.
    fn lose_connection(&mut self) {
        self.drop_connection();
        self.next_attempt = Instant::now() + self.backoff;
    }

    /// Writes `frame` to the collector if connected, never to the spill
    /// file (clock samples only mean something on their connection).
    /// Returns whether it was written.
    pub fn write_live(&mut self, frame: &[u8]) -> bool {
        let Some(connection) = &mut self.connection else {
            return false;
        };
        if connection.out().write_all(frame).is_ok() {
            return true;
        }
        self.lose_connection();
        false
    }

    /// Connects, sends the stream's start and waits for the collector's
    /// answer to the hello.
    fn attempt(&mut self) -> Result<Connection, Attempt> {
        let mut connection = Connection::open(&self.address).map_err(|_| Attempt::Failed)?;
        let start = self.start_of_stream(true);
        connection
            .out()
            .write_all(&start)
            .map_err(|_| Attempt::Failed)?;
        let reply = wire::read_reply(connection.input()).map_err(|_| Attempt::Failed)?;
        if reply.accepted {
            Ok(connection)
        } else {
            Err(Attempt::Refused(reply))
        }
    }

    fn refused(&mut self, reply: wire::pb::HelloReply) {
        self.gave_up = !reply.retry;
        let reason = crate::sanitize::printable(&reply.reason, 512);
        if self.warned && self.refusal.is_none() {
            eprintln!(
                "rtrace: collector {} refused this stream: {reason}; writing to {}",
                self.address,
                self.spill_path.display()
            );
        }
        self.refusal = Some(reason);
    }

    /// Connects if it is time to try; returns whether a connection is up.
    fn ensure_connection(&mut self) -> bool {
        if self.connection.is_some() {
            return true;
        }
        let now = Instant::now();
        if self.gave_up || now < self.next_attempt {
            return false;
        }
        match self.attempt() {
            Ok(connection) => {
                self.connection = Some(connection);
                self.link = Some(SyncLink::new(self.sync));
                self.backoff = FIRST_RETRY;
                true
            }
            Err(failure) => {
                if let Attempt::Refused(reply) = failure {
                    self.refused(reply);
                }
                self.next_attempt = now + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_RETRY);
                false
            }
        }
    }

    fn spill(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.spill.is_some() && !self.spilling {
            let mut snapshot = Vec::new();
            self.timekeeper.snapshot_frame(&mut snapshot);
            if let Some(out) = &mut self.spill {
                out.append(&snapshot)?;
            }
        }
        self.spilling = true;
        if self.spill.is_none() {
            if self.spill_failed {
                return Err(io::Error::other("no collector and no spill file"));
            }
            let start = self.start_of_stream(false);
            match FrameFile::create(&self.spill_path, &start) {
                Ok(out) => {
                    self.warn_spilling();
                    self.spill = Some(out);
                }
                Err(e) => {
                    self.spill_failed = true;
                    return Err(e);
                }
            }
        }
        match &mut self.spill {
            Some(out) => out.append(frame),
            None => Ok(()),
        }
    }

    fn warn_spilling(&mut self) {
        let why = match &self.refusal {
            Some(reason) => format!("refused this stream: {reason}"),
            None => "unreachable".to_owned(),
        };
        eprintln!(
            "rtrace: collector {} {why}; spilling to {} (join it later with `rtrace-collect merge`)",
            self.address,
            self.spill_path.display()
        );
        self.warned = true;
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.ensure_connection() {
            if let Some(connection) = &mut self.connection {
                if connection.out().write_all(frame).is_ok() {
                    self.spilling = false;
                    return Ok(());
                }
            }
            // The collector went away (or stalled past the write timeout);
            // this frame, and what follows until it is back, is spilled.
            self.lose_connection();
        }
        self.spill(frame)
    }

    /// Runs the clock exchange on the connection and writes its samples.
    fn exchange(&mut self, at_end: bool) {
        let (Some(connection), Some(link)) = (&mut self.connection, &mut self.link) else {
            return;
        };
        let ran = if at_end {
            link.run_at_end(connection.duplex())
        } else {
            link.run(connection.duplex())
        };
        let samples = match ran {
            Ok((samples, fresh)) if !samples.is_empty() => (samples, fresh),
            Ok(_) => return,
            Err(_) => return self.lose_connection(),
        };
        let mut frames = Vec::new();
        self.timekeeper.samples(&samples.0, samples.1, &mut frames);
        if !frames.is_empty() {
            self.write_live(&frames);
        }
    }
}

impl Sink for CollectorSink {
    fn write_intern(&mut self, frame: &[u8]) -> io::Result<()> {
        self.preamble.extend_from_slice(frame);
        if let Some(spill) = &mut self.spill {
            spill.append(frame)?;
        }
        let broken = match &mut self.connection {
            Some(c) => c.out().write_all(frame).is_err(),
            None => false,
        };
        if broken {
            self.drop_connection();
        }
        Ok(())
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.send(frame)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(c) = &mut self.connection {
            if c.out().flush().is_err() {
                self.drop_connection();
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "collector {} (spill file {})",
            self.address,
            self.spill_path.display()
        )
    }

    /// A connection whose collector may have written to it (its hello,
    /// pongs) must not be closed with those bytes unread: the kernel would
    /// answer with a reset, and the collector could lose the end of the
    /// stream. So: half-close, then read (and drop) until the collector
    /// closes its side, which it does once it has read everything.
    fn close(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        self.link = None;
        if self.sync.interval.is_none() || connection.shutdown_write().is_err() {
            return;
        }
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let mut connection = connection;
        let mut sink = [0u8; 512];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let duplex = connection.duplex();
            if duplex
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return;
            }
            match duplex.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn sync_clock(&mut self) {
        self.exchange(false);
    }

    fn sync_clock_at_end(&mut self) {
        self.exchange(true);
    }
}
