//! Accepting streams: a listener per address, and a reader thread per
//! connection that first runs the handshake (token, hello, within the hello
//! timeout, then the `HelloReply`) and then hands the stream to a
//! `Handler`: the collector's (`collect`) decodes frames (never trusting
//! them: size limits, typed errors), applies the stream's clock estimate
//! and hands its items to the merge; a relay's forwards them (see
//! `relay`). Only after the handshake does the collector greet a peer that
//! takes part in the clock exchange (`CollectorHello`) and answer its
//! pings. A bad or refused stream is closed with a message naming it;
//! nothing else is affected. Connections beyond `--max-connections` are
//! refused at once, without a thread.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::Sender;
use rtrace::merge::ThreadOrder;
use rtrace::timeline::{ProcessInfo, StreamEncoder, StreamEnd};
use rtrace::{sanitize, Address, Chunk, EventReader, ReadAhead, StreamItem};

use crate::access::Access;
use crate::clocksync::{AnswerOut, Responder, StreamClock};
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
/// A peer that does not take what the collector writes back to an
/// accepted stream (its `HelloReply`, `CollectorHello`, clock pongs)
/// within this long gets no more of it.
const ANSWER_WRITE_TIMEOUT: Duration = Duration::from_millis(500);
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
        self.shutdown(Shutdown::Both);
    }

    /// Best effort: a connection the peer closed already has nothing to shut.
    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Peer::Unix(s) => s.shutdown(how),
            Peer::Tcp(s) => s.shutdown(how),
        };
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Peer::Unix(s) => s.set_read_timeout(Some(timeout)),
            Peer::Tcp(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_timed(buf).map(|(n, _)| n)
    }

    /// Reads like `read`; also returns when the bytes arrived
    /// (CLOCK_MONOTONIC ns) if the kernel says (TCP, see `rxstamp`).
    fn read_timed(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        match self {
            Peer::Unix(s) => (&**s).read(buf).map(|n| (n, None)),
            Peer::Tcp(s) => rtrace::rxstamp::recv(&**s, buf),
        }
    }

    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Peer::Unix(s) => (&**s).write_all(bytes),
            Peer::Tcp(s) => (&**s).write_all(bytes),
        }
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Peer::Unix(s) => s.set_write_timeout(Some(timeout)),
            Peer::Tcp(s) => s.set_write_timeout(Some(timeout)),
        }
    }

    /// Tells the peer `reply` and closes the connection. The reply is
    /// tiny, so a write to a fresh socket never blocks long.
    fn refuse(&self, reply: &[u8], discard: bool) {
        let written = self
            .set_write_timeout(REPLY_WRITE_TIMEOUT)
            .and_then(|()| self.write_all(reply))
            .and_then(|()| match self {
                Peer::Unix(s) => s.shutdown(Shutdown::Write),
                Peer::Tcp(s) => s.shutdown(Shutdown::Write),
            });
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

/// Writes to a peer (the collector's answers on an accepted stream).
struct PeerWriter(Peer);

impl AnswerOut for PeerWriter {
    fn shut(&mut self) {
        self.0.shutdown(Shutdown::Write);
    }
}

impl Write for PeerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.0 {
            Peer::Unix(s) => (&**s).write(buf),
            Peer::Tcp(s) => (&**s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Lets a few messages per second through.
pub struct Throttle {
    window: Mutex<(Instant, u32)>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// `message`, unless too many came this second.
    pub fn message(&self, message: String) -> Option<String> {
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
    /// Readable once the listeners are to stop: wakes their poll at once.
    stop: Option<StopSignal>,
    peers: Mutex<HashMap<ConnId, Peer>>,
    next_id: AtomicU64,
    streams: AtomicU64,
    refused: AtomicU64,
    throttle: Throttle,
    handler: Arc<dyn Handler>,
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
    /// this second.
    fn refused(&self, message: String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(message) = self.throttle.message(message) {
            self.handler.refused(message);
        }
    }
}

/// A stream that passed the handshake: its `HelloReply` is sent, and a
/// peer that takes part in the clock exchange is greeted.
pub struct Accepted {
    pub conn: ConnId,
    /// Names the connection in messages ("tcp connection #3 from ...").
    pub name: String,
    /// The stream, read up to and with its hello (`reader.hello()`).
    pub reader: EventReader<Input>,
    /// The hello's process, made printable.
    pub process: ProcessInfo,
    /// The accepting reply, still to be sent (see `Welcome`).
    pub welcome: Welcome,
    /// Bytes read from the connection so far.
    pub bytes: Arc<AtomicU64>,
}

/// The accepting `HelloReply` of a stream that passed the handshake, not
/// sent yet. A recorder stamps its first event only after reading it, so a
/// handler that sends it once the stream can no longer miss anything (the
/// merge has registered it; a relay's upstream has connected) knows that
/// every event of the stream is newer than that moment: the merge need not
/// hold events back for processes that have not connected yet.
pub struct Welcome {
    peer: Peer,
    arrival_ns: Arc<AtomicU64>,
    clock_sync: bool,
}

impl Welcome {
    /// Sends the reply, then the `CollectorHello` to a peer that takes part
    /// in the clock exchange; returns what answers its clock pings.
    pub fn send(self) -> io::Result<Responder> {
        self.peer.set_read_timeout(IDLE_TIMEOUT)?;
        self.peer.set_write_timeout(ANSWER_WRITE_TIMEOUT)?;
        self.peer.write_all(&handshake::reply(true, "", false))?;
        let mut responder = Responder::new(Box::new(PeerWriter(self.peer)), self.arrival_ns);
        if self.clock_sync {
            responder.greet();
        }
        Ok(responder)
    }
}

/// What serves the connections an `Ingest` accepts; its methods run on
/// the connections' reader threads, and must never wait long in
/// `refused`.
pub trait Handler: Send + Sync {
    /// Serves a stream that passed the handshake, until it ends; sends
    /// its `welcome` first, as soon as the stream is ready for events.
    fn accepted(&self, stream: Accepted);
    /// A connection closed before its hello was accepted: not rtrace,
    /// broken, or silent past the hello timeout. `bytes`: read from it.
    fn broken(&self, conn: ConnId, error: String, bytes: u64);
    /// A connection was refused (a few messages a second at most; all
    /// are counted by `Ingest::refused`).
    fn refused(&self, message: String);
}

/// The collector's handler: every stream's items go to the merge.
struct ToMerge {
    tx: Sender<Arrival>,
}

impl Handler for ToMerge {
    fn accepted(&self, stream: Accepted) {
        collect(stream, &self.tx);
    }

    fn broken(&self, conn: ConnId, error: String, bytes: u64) {
        let _ = self.tx.send(Arrival::Closed {
            conn,
            end: broken(),
            error: Some(error),
            bytes,
        });
    }

    /// Never waits: dropped while the merge is behind.
    fn refused(&self, message: String) {
        let _ = self.tx.try_send(Arrival::Refused { message });
    }
}

/// The listeners and the connections they accepted.
pub struct Ingest {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    unix_paths: Vec<std::path::PathBuf>,
    listening: Vec<Address>,
}

impl Ingest {
    /// Checks `access` against the addresses, binds every address and
    /// starts accepting; each stream's items go to `tx` (see `collect`).
    pub fn start(addresses: &[Address], access: Access, tx: Sender<Arrival>) -> Result<Ingest> {
        Ingest::start_with(addresses, access, Arc::new(ToMerge { tx }))
    }

    /// Checks `access` against the addresses, binds every address and
    /// starts accepting; `handler` serves each connection on a thread of
    /// its own.
    pub fn start_with(
        addresses: &[Address],
        access: Access,
        handler: Arc<dyn Handler>,
    ) -> Result<Ingest> {
        access.check(addresses)?;
        let mut ingest = Ingest {
            shared: Arc::new(Shared {
                access,
                accepting: AtomicBool::new(true),
                stop: StopSignal::new(),
                peers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                streams: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                throttle: Throttle::new(),
                handler,
            }),
            threads: Vec::new(),
            unix_paths: Vec::new(),
            listening: Vec::new(),
        };
        for address in addresses {
            let listener = bind(address)?;
            if let Address::Unix(path) = address {
                ingest.unix_paths.push(path.clone());
            }
            ingest.listening.push(listener.address(address));
            let shared = ingest.shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("accept {address}"))
                .spawn(move || accept_loop(&shared, &listener))
                .context("starting an accept thread")?;
            ingest.threads.push(thread);
        }
        Ok(ingest)
    }

    /// The addresses listened on, in the order given; a TCP port 0 (any
    /// free port) as the port the system chose.
    pub fn addresses(&self) -> &[Address] {
        &self.listening
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
        if let Some(stop) = &self.shared.stop {
            stop.raise();
        }
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
    /// What to call `given` once bound: a TCP address with port 0 as the
    /// address and port the system chose, so that it can be dialled.
    fn address(&self, given: &Address) -> Address {
        match (self, given) {
            (Listener::Tcp(l), Address::Tcp(hostport))
                if hostport
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>() == Ok(0)) =>
            {
                l.local_addr()
                    .map_or_else(|_| given.clone(), |a| Address::Tcp(a.to_string()))
            }
            _ => given.clone(),
        }
    }

    /// Waits until a connection waits, `stop` is raised, or `timeout`.
    fn wait(&self, stop: Option<&StopSignal>, timeout: Duration) {
        let fd = match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        };
        let entry = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [entry(fd), entry(stop.map_or(-1, |s| s.0.as_raw_fd()))];
        // SAFETY: `fds` is a valid, exclusively borrowed array of two
        // entries for the call's duration; its descriptors are an open
        // listener that `self` owns and an open eventfd that `stop` owns,
        // or -1, which poll ignores; poll only reads the descriptor numbers.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_millis() as libc::c_int) };
    }
}

/// An eventfd that becomes readable, for good, when raised: stopping the
/// collector then does not wait out a listener's poll (up to
/// `ACCEPT_POLL`, a delay every run's finish would pay).
struct StopSignal(std::os::fd::OwnedFd);

impl StopSignal {
    /// `None` if the kernel gives no eventfd: listeners then notice a stop
    /// within `ACCEPT_POLL`.
    fn new() -> Option<StopSignal> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a
        // new descriptor that nothing else owns.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        // SAFETY: `fd` is open and owned by nobody else (see above).
        #[allow(unsafe_code)]
        (fd >= 0).then(|| StopSignal(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn raise(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to an eventfd
        // this signal owns; a full counter (it never is) only fails.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
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
/// socket (nobody listening) is replaced; a live one is an error, and so
/// is anything at `path` that is not a socket (a file, a directory), which
/// is left as it is. The socket is created under a umask of 0o177, so it
/// is never open to others, not even between `bind` and `chmod`.
fn bind_unix(path: &Path) -> Result<UnixListener> {
    remove_stale_socket(path)?;
    let listener = with_owner_only_umask(|| UnixListener::bind(path))
        .with_context(|| format!("cannot listen on unix://{}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Removes the socket at `path` if nobody listens on it: a collector that
/// was killed leaves its socket behind. Only a socket is removed, and only
/// when connecting is refused: a mistyped `--listen unix://notes.txt` must
/// not delete the notes.
fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
    };
    if !metadata.file_type().is_socket() {
        bail!(
            "cannot listen on unix://{0}: {0} exists and is not a socket ({1}); \
             it was left alone: choose another path",
            path.display(),
            kind_of(&metadata.file_type())
        );
    }
    match UnixStream::connect(path) {
        Ok(_) => bail!(
            "another collector is already listening on unix://{}; stop it or choose another path",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display())),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot tell whether anyone listens on the socket {}",
                path.display()
            )
        }),
    }
}

/// What a file that is not a socket is, for messages.
fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
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
                listener.wait(shared.stop.as_ref(), ACCEPT_POLL);
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
        Peer::Tcp(s) => {
            s.set_nonblocking(false)?;
            // Pongs must leave at once, not wait for more bytes.
            s.set_nodelay(true)?;
            // Pings' arrival times (see `rtrace::rxstamp`); read times without.
            let _ = rtrace::rxstamp::enable(&**s);
        }
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
/// only until the hello deadline; afterwards, up to the idle timeout. Notes
/// when the bytes of each read arrived (a clock ping's t2).
pub struct SocketRead {
    peer: Peer,
    deadline: Arc<Mutex<Option<Instant>>>,
    hello_timeout: Duration,
    /// CLOCK_MONOTONIC ns: the kernel's receive time on TCP, else the
    /// read's end.
    arrival_ns: Arc<AtomicU64>,
    backlog: crate::priority::Backlog,
}

impl SocketRead {
    fn read_noting_arrival(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, arrived) = self.peer.read_timed(buf)?;
        if n > 0 {
            let at = arrived.unwrap_or_else(rtrace::clock::monotonic_ns);
            self.arrival_ns.store(at, Ordering::Relaxed);
        }
        self.backlog.read(n, buf.len());
        Ok(n)
    }
}

impl Read for SocketRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.deadline.lock().ok().and_then(|d| *d);
        let Some(deadline) = deadline else {
            return self
                .read_noting_arrival(buf)
                .map_err(|e| timed_out(e, "sent nothing (not even a heartbeat) for 30 s"));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let hello_timeout = self.hello_timeout;
        let late = || {
            format!(
                "sent no complete hello within {} s",
                hello_timeout.as_secs_f64()
            )
        };
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, late()));
        }
        self.peer.set_read_timeout(left)?;
        self.read_noting_arrival(buf)
            .map_err(|e| timed_out(e, &late()))
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
pub struct Counting<R> {
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

impl<R: ReadAhead> ReadAhead for Counting<R> {
    fn read_ahead(&self) -> &[u8] {
        self.inner.read_ahead()
    }
}

/// A connection's input as handlers read it.
pub type Input = Counting<BufReader<SocketRead>>;

/// Runs the handshake; answers it, then hands the stream to the handler.
fn serve(conn: ConnId, name: String, peer: Peer, tcp: bool, shared: &Shared) {
    let bytes = Arc::new(AtomicU64::new(0));
    let arrival_ns = Arc::new(AtomicU64::new(0));
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
                arrival_ns: arrival_ns.clone(),
                backlog: crate::priority::Backlog::default(),
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
    let handler = &shared.handler;
    match handshake::handshake(input, name.clone(), &terms) {
        Outcome::Accepted(reader, process) => {
            if let Ok(mut d) = deadline.lock() {
                *d = None;
            }
            let welcome = Welcome {
                peer,
                arrival_ns,
                clock_sync: reader.hello().is_some_and(|h| h.clock_sync),
            };
            handler.accepted(Accepted {
                conn,
                name,
                reader: *reader,
                process,
                welcome,
                bytes,
            });
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
        }
        Outcome::Broken(error) => {
            handler.broken(
                conn,
                format!("{name}: {error}"),
                bytes.load(Ordering::Relaxed),
            );
        }
    }
}

/// The collector's handler of a stream: tells the merge, forwards the
/// stream's items (with its clock mapped), and always ends with `Closed`.
fn collect(stream: Accepted, tx: &Sender<Arrival>) {
    let Accepted {
        conn,
        name,
        reader,
        process,
        welcome,
        bytes,
    } = stream;
    let (reply, encoder) = crossbeam_channel::bounded(1);
    let hello = Arrival::Hello {
        conn,
        process,
        encoder: reply,
    };
    // The merge has registered the stream once it answers: only then the
    // welcome (see `Welcome`).
    let encoder = match tx.send(hello) {
        Ok(()) => encoder.recv().ok().flatten(),
        Err(_) => None,
    };
    let (end, error) = match welcome.send() {
        Ok(mut responder) => forward(conn, reader, &mut responder, tx, encoder),
        Err(e) => (broken(), Some(format!("could not answer the hello: {e}"))),
    };
    let _ = tx.send(Arrival::Closed {
        conn,
        end,
        error: error.map(|e| format!("{name}: {e}")),
        bytes: bytes.load(Ordering::Relaxed),
    });
}

fn broken() -> StreamEnd {
    StreamEnd {
        truncated: true,
        ..StreamEnd::default()
    }
}

/// Forwards a stream's items, their clock mapped, in thread order, made
/// printable (and encoded, if the output gave an encoder); answers the
/// stream's clock pings as they come. Returns how it ended and, for a
/// stream closed because of bad input, why.
fn forward<R: Read + ReadAhead>(
    conn: ConnId,
    mut reader: EventReader<R>,
    responder: &mut Responder,
    tx: &Sender<Arrival>,
    encoder: Option<Box<dyn StreamEncoder>>,
) -> (StreamEnd, Option<String>) {
    // Nothing follows the end marker: once it is read, the stream is over
    // for this side (see `Responder::end`).
    reader.stop_at_end();
    let mut clock = reader
        .hello()
        .map_or_else(|| StreamClock::new(false, 1, false), StreamClock::for_hello);
    let mut out = Outgoing {
        conn,
        order: ThreadOrder::default(),
        encoder,
        tx,
    };
    let mut events = 0u64;
    // This thread carries the stream's events (see `priority`).
    let _follower = crate::priority::Follower::new();
    let error = loop {
        let mut chunks = Vec::new();
        let read = read_arrived(&mut reader, responder, &mut chunks);
        if matches!(read, Ok(false)) {
            // The end marker, or the end of the connection: shut the sending
            // side before the last chunks go to the merge (`Responder::end`).
            responder.end();
        }
        events += chunks.iter().map(chunk_events).sum::<usize>() as u64;
        let mut ready = Vec::with_capacity(chunks.len() + 1);
        clock.process(chunks, &mut ready);
        if !out.send(ready) {
            break None;
        }
        match read {
            Ok(true) => {}
            Ok(false) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    let mut ready = Vec::new();
    clock.finish(&mut ready);
    out.send(ready);
    let end = StreamEnd {
        events,
        lost: reader.lost(),
        truncated: error.is_some() || reader.truncated(),
        last_ts_ns: 0,
    };
    (end, error)
}

/// Frames read ahead are handed to the merge together up to this many
/// chunks (a chunk is a batch of up to a buffer of events, or one item).
const MAX_CHUNKS_AT_ONCE: usize = 256;

/// Reads the next chunk (waiting for it), then every chunk whose frame has
/// arrived already, into `chunks`, answering clock pings as they are read;
/// false at the end of the stream. On an error, `chunks` holds the chunks
/// read before it.
fn read_arrived<R: Read + ReadAhead>(
    reader: &mut EventReader<R>,
    responder: &mut Responder,
    chunks: &mut Vec<Chunk>,
) -> rtrace::Result<bool> {
    loop {
        let from = chunks.len();
        let Some(chunk) = reader.next_chunk()? else {
            return Ok(false);
        };
        chunks.push(chunk);
        reader.take_ready_chunks(chunks);
        // Before reading on: a pong's delay is the round trip's error.
        responder.answer_pings(&chunks[from..]);
        if chunks.len() >= MAX_CHUNKS_AT_ONCE || !reader.chunk_ready() {
            return Ok(true);
        }
    }
}

/// The last steps of a stream's chunks on their reader thread.
struct Outgoing<'a> {
    conn: ConnId,
    order: ThreadOrder,
    encoder: Option<Box<dyn StreamEncoder>>,
    tx: &'a Sender<Arrival>,
}

impl Outgoing<'_> {
    /// Puts `chunks` (clock mapped) in thread order, makes them printable,
    /// encodes them, and sends them to the merge; false once it is gone.
    fn send(&mut self, mut chunks: Vec<Chunk>) -> bool {
        if chunks.is_empty() {
            return true;
        }
        self.order.chunks(&mut chunks);
        for chunk in &mut chunks {
            sanitize_chunk(chunk);
            if let Some(encoder) = &mut self.encoder {
                encoder.chunk(chunk);
            }
        }
        // Blocks while the merge is behind (the channel is short): the
        // socket is not read, so the recorder's queue fills and its policy
        // (drop and count, or block) applies, instead of the backlog piling
        // up in the collector's memory.
        let conn = self.conn;
        self.tx.send(Arrival::Chunks { conn, chunks }).is_ok()
    }
}

/// Events in a chunk.
pub fn chunk_events(chunk: &Chunk) -> usize {
    match chunk {
        Chunk::Events { events, .. } => events.len(),
        Chunk::Plain { plain, .. } => plain.len(),
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
