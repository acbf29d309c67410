//! Accepting streams: a listener per address, and a reader thread per
//! connection that first runs the handshake (token, hello, within the hello
//! timeout) and then decodes frames (never trusting them: size limits,
//! typed errors) and hands their items to the merge. A bad or refused
//! stream is closed with a message naming it; nothing else is affected.
//! Connections beyond `--max-connections` are refused at once, without a
//! thread.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::Sender;
use rtrace::timeline::{ProcessInfo, StreamEncoder, StreamEnd};
use rtrace::{sanitize, Address, Chunk, EventReader, StreamItem};

use crate::access::Access;
use crate::handshake::{self, Outcome, Terms};

/// A connection, numbered in order of arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// What reader threads tell the merge.
#[derive(Debug)]
pub enum Arrival {
    /// A stream begins. The merge answers on `encoder` with the stream's
    /// encoder, if the output has one: the reader thread then encodes the
    /// stream's events itself, ahead of the merge.
    Hello {
        conn: ConnId,
        process: ProcessInfo,
        encoder: Sender<Option<Box<dyn StreamEncoder>>>,
    },
    /// What a frame of the stream held (a batch of events, usually).
    Chunks { conn: ConnId, chunks: Vec<Chunk> },
    Closed {
        conn: ConnId,
        end: StreamEnd,
        error: Option<String>,
        bytes: u64,
    },
    /// A connection was refused (token, limits, protocol version). Sent
    /// for a few refusals a second; all are counted by `Ingest::refused`.
    Refused { message: String },
}

/// A peer that sends nothing (not even a heartbeat) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// A refused peer's reply must not block the collector for longer.
const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a refusal, what the peer had already sent is read and dropped
/// (so it sees the reply, not a reset) for at most this long or this much.
const DISCARD_TIMEOUT: Duration = Duration::from_millis(500);
const DISCARD_BYTES: u64 = 1 << 20;
/// Refusal messages printed per second at most; the rest are counted.
const REFUSALS_PRINTED_PER_SECOND: u32 = 5;

#[derive(Clone)]
enum Peer {
    Unix(Arc<UnixStream>),
    Tcp(Arc<TcpStream>),
}

impl Peer {
    fn close(&self) {
        let _ = match self {
            Peer::Unix(s) => s.shutdown(Shutdown::Both),
            Peer::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Peer::Unix(s) => s.set_read_timeout(Some(timeout)),
            Peer::Tcp(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Peer::Unix(s) => (&**s).read(buf),
            Peer::Tcp(s) => (&**s).read(buf),
        }
    }

    /// Tells the peer `reply` and closes the connection. The reply is
    /// tiny, so a write to a fresh socket never blocks long.
    fn refuse(&self, reply: &[u8], discard: bool) {
        let written = match self {
            Peer::Unix(s) => s
                .set_write_timeout(Some(REPLY_WRITE_TIMEOUT))
                .and_then(|()| (&**s).write_all(reply))
                .and_then(|()| s.shutdown(Shutdown::Write)),
            Peer::Tcp(s) => s
                .set_write_timeout(Some(REPLY_WRITE_TIMEOUT))
                .and_then(|()| (&**s).write_all(reply))
                .and_then(|()| s.shutdown(Shutdown::Write)),
        };
        if written.is_ok() && discard {
            self.discard();
        }
        self.close();
    }

    /// Reads and drops what the peer sends until it closes, within limits.
    fn discard(&self) {
        let deadline = Instant::now() + DISCARD_TIMEOUT;
        let mut buf = [0u8; 8192];
        let mut total = 0u64;
        while total < DISCARD_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.set_read_timeout(left).is_err() {
                break;
            }
            match self.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
    }
}

/// Lets a few refusal messages per second through.
struct Throttle {
    window: Mutex<(Instant, u32)>,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle {
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    fn message(&self, message: String) -> Option<String> {
        let mut window = self.window.lock().ok()?;
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        (window.1 <= REFUSALS_PRINTED_PER_SECOND).then_some(message)
    }
}

/// What every accept and reader thread shares.
struct Shared {
    access: Access,
    accepting: AtomicBool,
    peers: Mutex<HashMap<ConnId, Peer>>,
    next_id: AtomicU64,
    streams: AtomicU64,
    refused: AtomicU64,
    throttle: Throttle,
    tx: Sender<Arrival>,
}

impl Shared {
    fn open_connections(&self) -> usize {
        self.peers.lock().map_or(0, |p| p.len())
    }

    /// Claims one of the `--max-streams` slots.
    fn take_stream(&self) -> bool {
        self.streams.fetch_add(1, Ordering::Relaxed) < self.access.max_streams
    }

    /// Counts a refusal and passes its message on, unless too many came
    /// this second or the merge is behind: refusing never waits.
    fn refused(&self, message: String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(message) = self.throttle.message(message) {
            let _ = self.tx.try_send(Arrival::Refused { message });
        }
    }
}

/// The listeners and the connections they accepted.
pub struct Ingest {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    unix_paths: Vec<std::path::PathBuf>,
}

impl Ingest {
    /// Checks `access` against the addresses, binds every address and
    /// starts accepting.
    pub fn start(addresses: &[Address], access: Access, tx: Sender<Arrival>) -> Result<Ingest> {
        access.check(addresses)?;
        let mut ingest = Ingest {
            shared: Arc::new(Shared {
                access,
                accepting: AtomicBool::new(true),
                peers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                streams: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                throttle: Throttle::new(),
                tx,
            }),
            threads: Vec::new(),
            unix_paths: Vec::new(),
        };
        for address in addresses {
            let listener = bind(address)?;
            if let Address::Unix(path) = address {
                ingest.unix_paths.push(path.clone());
            }
            let shared = ingest.shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("accept {address}"))
                .spawn(move || accept_loop(&shared, &listener))
                .context("starting an accept thread")?;
            ingest.threads.push(thread);
        }
        Ok(ingest)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections()
    }

    /// Connections refused so far (token, limits, protocol version).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Stops accepting new connections (open ones keep streaming).
    pub fn stop_accepting(&mut self) {
        self.shared.accepting.store(false, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for path in self.unix_paths.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Closes every open connection; their readers report what they got.
    pub fn close_all(&self) {
        if let Ok(peers) = self.shared.peers.lock() {
            for peer in peers.values() {
                peer.close();
            }
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop_accepting();
        self.close_all();
    }
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    /// Waits up to `timeout` for a connection to accept.
    fn wait(&self, timeout: Duration) {
        let fd = match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        };
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pollfd` is a valid, exclusively borrowed array of one
        // entry for the call's duration, and `fd` is an open listener that
        // `self` owns; poll only reads the descriptor number.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::poll(&mut pollfd, 1, timeout.as_millis() as libc::c_int) };
    }
}

fn bind(address: &Address) -> Result<Listener> {
    match address {
        Address::Unix(path) => bind_unix(path).map(Listener::Unix),
        Address::Tcp(hostport) => {
            let listener = TcpListener::bind(hostport)
                .with_context(|| format!("cannot listen on tcp://{hostport}"))?;
            listener.set_nonblocking(true)?;
            Ok(Listener::Tcp(listener))
        }
    }
}

/// Binds a Unix socket readable and writable by its owner only. A stale
/// socket file (nobody listening) is replaced; a live one is an error.
/// The socket is created under a umask of 0o177, so it is never open to
/// others, not even between `bind` and `chmod`.
fn bind_unix(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "another collector is already listening on unix://{}; stop it or choose another path",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = with_owner_only_umask(|| UnixListener::bind(path))
        .with_context(|| format!("cannot listen on unix://{}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Runs `f` with the process umask set to 0o177. The umask is process-wide:
/// files other threads create meanwhile get it too, which only makes them
/// more private.
fn with_owner_only_umask<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail
    // and touches no memory.
    #[allow(unsafe_code)]
    let old = unsafe { libc::umask(0o177) };
    let result = f();
    // SAFETY: as above; restores the mask read before.
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(old);
    }
    result
}

fn accept_loop(shared: &Arc<Shared>, listener: &Listener) {
    let mut last_error: Option<(io::ErrorKind, Instant)> = None;
    loop {
        // Once asked to stop, still take what already waits in the
        // backlog: those processes have connected, maybe even finished.
        let stopping = !shared.accepting.load(Ordering::Relaxed);
        let accepted = match listener {
            Listener::Unix(l) => l.accept().map(|(s, _)| {
                let name = |id: ConnId| format!("unix connection #{}", id.0);
                admit(shared, Peer::Unix(Arc::new(s)), false, name)
            }),
            Listener::Tcp(l) => l.accept().map(|(s, peer)| {
                let name = move |id: ConnId| format!("tcp connection #{} from {peer}", id.0);
                admit(shared, Peer::Tcp(Arc::new(s)), true, name)
            }),
        };
        match accepted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("rtrace-collect: {e:#}"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stopping {
                    return;
                }
                listener.wait(ACCEPT_POLL);
            }
            Err(e) => {
                // Out of descriptors, say: report once a minute, not in a loop.
                let quiet = last_error
                    .is_some_and(|(k, t)| k == e.kind() && t.elapsed() < Duration::from_secs(60));
                if !quiet {
                    eprintln!("rtrace-collect: accept failed: {e}");
                    last_error = Some((e.kind(), Instant::now()));
                }
                if stopping {
                    return;
                }
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// Takes a new connection: refused at once over the connection limit,
/// else served by a reader thread of its own.
fn admit(
    shared: &Arc<Shared>,
    peer: Peer,
    tcp: bool,
    name: impl FnOnce(ConnId) -> String,
) -> Result<()> {
    let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let name = name(id);
    let limit = shared.access.max_connections;
    if shared.open_connections() >= limit {
        let reason = format!("too many connections (limit {limit}, --max-connections)");
        peer.refuse(&handshake::reply(false, &reason, true), false);
        shared.refused(format!("refused {name}: {reason}"));
        return Ok(());
    }
    match &peer {
        Peer::Unix(s) => s.set_nonblocking(false)?,
        Peer::Tcp(s) => s.set_nonblocking(false)?,
    }
    if let Ok(mut peers) = shared.peers.lock() {
        peers.insert(id, peer.clone());
    }
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("stream #{}", id.0))
        .spawn(move || {
            serve(id, name, peer, tcp, &thread_shared);
            if let Ok(mut peers) = thread_shared.peers.lock() {
                peers.remove(&id);
            }
        });
    if spawned.is_err() {
        if let Ok(mut peers) = shared.peers.lock() {
            peers.remove(&id).inspect(Peer::close);
        }
    }
    spawned.map(drop).context("starting a stream reader thread")
}

/// Reads from a connection. Until the handshake is over each read waits
/// only until the hello deadline; afterwards, up to the idle timeout.
struct SocketRead {
    peer: Peer,
    deadline: Arc<Mutex<Option<Instant>>>,
    hello_timeout: Duration,
}

impl Read for SocketRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.deadline.lock().ok().and_then(|d| *d);
        let Some(deadline) = deadline else {
            return self
                .peer
                .read(buf)
                .map_err(|e| timed_out(e, "sent nothing (not even a heartbeat) for 30 s"));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let late = || {
            format!(
                "sent no complete hello within {} s",
                self.hello_timeout.as_secs_f64()
            )
        };
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, late()));
        }
        self.peer.set_read_timeout(left)?;
        self.peer.read(buf).map_err(|e| timed_out(e, &late()))
    }
}

/// A read timeout, explained.
fn timed_out(e: io::Error, what: &str) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
        }
        _ => e,
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Runs the handshake, then decodes the stream and forwards it. A stream
/// that got past its hello always ends with `Closed`.
fn serve(conn: ConnId, name: String, peer: Peer, tcp: bool, shared: &Shared) {
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Arc::new(Mutex::new(Some(
        Instant::now() + shared.access.hello_timeout,
    )));
    let input = Counting {
        inner: BufReader::with_capacity(
            1 << 16,
            SocketRead {
                peer: peer.clone(),
                deadline: deadline.clone(),
                hello_timeout: shared.access.hello_timeout,
            },
        ),
        bytes: bytes.clone(),
    };
    let take_stream = || shared.take_stream();
    let terms = Terms {
        access: &shared.access,
        tcp,
        take_stream: &take_stream,
    };
    let tx = &shared.tx;
    let (end, error) = match handshake::handshake(input, name.clone(), &terms) {
        Outcome::Accepted(reader, process) => {
            if let Ok(mut d) = deadline.lock() {
                *d = None;
            }
            let welcomed = peer
                .set_read_timeout(IDLE_TIMEOUT)
                .and_then(|()| peer_write(&peer, &handshake::reply(true, "", false)));
            if let Err(e) = welcomed {
                (broken(), Some(format!("could not answer the hello: {e}")))
            } else {
                let (reply, encoder) = crossbeam_channel::bounded(1);
                let hello = Arrival::Hello {
                    conn,
                    process,
                    encoder: reply,
                };
                let encoder = match tx.send(hello) {
                    Ok(()) => encoder.recv().ok().flatten(),
                    Err(_) => None,
                };
                forward(conn, *reader, tx, encoder)
            }
        }
        Outcome::Refused {
            reason,
            retry,
            process,
        } => {
            peer.refuse(&handshake::reply(false, &reason, retry), true);
            let who = process.map_or(String::new(), |p| {
                format!(" (session {:?}, pid {})", p.session, p.pid)
            });
            shared.refused(format!("refused {name}{who}: {reason}"));
            return;
        }
        Outcome::Broken(error) => (broken(), Some(error)),
    };
    let _ = tx.send(Arrival::Closed {
        conn,
        end,
        error: error.map(|e| format!("{name}: {e}")),
        bytes: bytes.load(Ordering::Relaxed),
    });
}

fn peer_write(peer: &Peer, bytes: &[u8]) -> io::Result<()> {
    match peer {
        Peer::Unix(s) => (&**s).write_all(bytes),
        Peer::Tcp(s) => (&**s).write_all(bytes),
    }
}

fn broken() -> StreamEnd {
    StreamEnd {
        truncated: true,
        ..StreamEnd::default()
    }
}

/// Forwards a stream's items, made printable; returns how it ended and,
/// for a stream closed because of bad input, why.
fn forward<R: Read>(
    conn: ConnId,
    mut reader: EventReader<R>,
    tx: &Sender<Arrival>,
    mut encoder: Option<Box<dyn StreamEncoder>>,
) -> (StreamEnd, Option<String>) {
    let mut events = 0u64;
    let error = loop {
        let chunk = match reader.next_chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        };
        let mut chunks = vec![chunk];
        reader.take_ready_chunks(&mut chunks);
        for chunk in &mut chunks {
            events += chunk_events(chunk) as u64;
            sanitize_chunk(chunk);
            if let Some(encoder) = &mut encoder {
                encoder.chunk(chunk);
            }
        }
        // Blocks while the merge is behind (the channel is short): the
        // socket is not read, so the recorder's queue fills and its policy
        // (drop and count, or block) applies, instead of the backlog piling
        // up in the collector's memory.
        if tx.send(Arrival::Chunks { conn, chunks }).is_err() {
            break None;
        }
    };
    let end = StreamEnd {
        events,
        lost: reader.lost(),
        truncated: error.is_some() || reader.truncated(),
        last_ts_ns: 0,
    };
    (end, error)
}

/// Events in a chunk.
pub fn chunk_events(chunk: &Chunk) -> usize {
    match chunk {
        Chunk::Events { events, .. } => events.len(),
        Chunk::Encoded { encoded, .. } => encoded.ts_ns.len(),
        Chunk::Item(StreamItem::Event(_)) => 1,
        Chunk::Item(_) => 0,
    }
}

/// Escapes control characters in the names a chunk carries.
pub fn sanitize_chunk(chunk: &mut Chunk) {
    if let Chunk::Item(item) = chunk {
        sanitize_item(item);
    }
}

/// Escapes control characters in the names an item carries.
pub fn sanitize_item(item: &mut StreamItem) {
    match item {
        StreamItem::Function(f) => *f = sanitize::function(f.clone()),
        StreamItem::Thread { name, .. } => {
            *name = sanitize::printable(name, sanitize::MAX_NAME_CHARS);
        }
        _ => {}
    }
}
