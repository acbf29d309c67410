//! Accepting streams: a listener per address, and a reader thread per
//! connection that decodes frames (never trusting them: size limits, typed
//! errors) and hands their items to the merge. A bad stream is closed with
//! a message naming it; nothing else is affected.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossbeam_channel::Sender;
use rtrace::timeline::{ProcessInfo, StreamEnd};
use rtrace::{Address, EventReader, FrameReader, StreamItem};

use crate::clocksync::{Responder, StreamClock};

/// A connection, numbered in order of arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// What reader threads tell the merge.
#[derive(Debug)]
pub enum Arrival {
    Hello {
        conn: ConnId,
        process: ProcessInfo,
    },
    Items {
        conn: ConnId,
        items: Vec<StreamItem>,
    },
    Closed {
        conn: ConnId,
        end: StreamEnd,
        error: Option<String>,
        bytes: u64,
    },
}

/// A peer that sends nothing (not even a heartbeat) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that does not take what the collector writes back (its hello,
/// clock pongs) within this long gets no more of it.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// A connection just accepted, handed to the connection handler on a
/// thread of its own.
pub struct Accepted {
    pub conn: ConnId,
    /// Names the connection in messages ("tcp connection #3 from ...").
    pub name: String,
    pub input: Box<dyn Read + Send>,
    /// The way back to the peer (the collector's hello, clock pongs).
    pub reply: Box<dyn Write + Send>,
    /// When the bytes of `input`'s latest read arrived (CLOCK_MONOTONIC
    /// ns): the kernel's receive time on TCP, else the read's end. A clock
    /// ping's t2.
    pub arrival_ns: Arc<AtomicU64>,
}

/// What serves each accepted connection (runs on its reader thread).
pub type Handler = Arc<dyn Fn(Accepted) + Send + Sync>;

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
}

/// The listeners and the connections they accepted.
pub struct Ingest {
    accepting: Arc<AtomicBool>,
    peers: Arc<Mutex<HashMap<ConnId, Peer>>>,
    threads: Vec<JoinHandle<()>>,
    unix_paths: Vec<std::path::PathBuf>,
}

impl Ingest {
    /// Binds every address and starts accepting; each connection's items
    /// go to `tx` (see `serve`).
    pub fn start(addresses: &[Address], tx: Sender<Arrival>) -> Result<Ingest> {
        let handler: Handler = Arc::new(move |accepted| serve(accepted, &tx));
        Ingest::start_with(addresses, handler)
    }

    /// Binds every address and starts accepting; `handler` serves each
    /// connection on a thread of its own.
    pub fn start_with(addresses: &[Address], handler: Handler) -> Result<Ingest> {
        let mut ingest = Ingest {
            accepting: Arc::new(AtomicBool::new(true)),
            peers: Arc::new(Mutex::new(HashMap::new())),
            threads: Vec::new(),
            unix_paths: Vec::new(),
        };
        let next_id = Arc::new(AtomicU64::new(0));
        for address in addresses {
            let listener = bind(address)?;
            if let Address::Unix(path) = address {
                ingest.unix_paths.push(path.clone());
            }
            let ctx = AcceptContext {
                accepting: ingest.accepting.clone(),
                peers: ingest.peers.clone(),
                next_id: next_id.clone(),
                handler: handler.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("accept {address}"))
                .spawn(move || ctx.run(listener))
                .context("starting an accept thread")?;
            ingest.threads.push(thread);
        }
        Ok(ingest)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.peers.lock().map_or(0, |p| p.len())
    }

    /// Stops accepting new connections (open ones keep streaming).
    pub fn stop_accepting(&mut self) {
        self.accepting.store(false, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for path in self.unix_paths.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Closes every open connection; their readers report what they got.
    pub fn close_all(&self) {
        if let Ok(peers) = self.peers.lock() {
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
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on unix://{}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

struct AcceptContext {
    accepting: Arc<AtomicBool>,
    peers: Arc<Mutex<HashMap<ConnId, Peer>>>,
    next_id: Arc<AtomicU64>,
    handler: Handler,
}

impl AcceptContext {
    fn run(self, listener: Listener) {
        loop {
            // Once asked to stop, still take what already waits in the
            // backlog: those processes have connected, maybe even finished.
            let stopping = !self.accepting.load(Ordering::Relaxed);
            let accepted = match &listener {
                Listener::Unix(l) => l.accept().map(|(s, _)| self.start_unix(s)),
                Listener::Tcp(l) => l.accept().map(|(s, peer)| self.start_tcp(s, peer)),
            };
            match accepted {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("rtrace-collect: {e:#}"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stopping {
                        return;
                    }
                    std::thread::sleep(ACCEPT_POLL);
                }
                Err(e) => {
                    eprintln!("rtrace-collect: accept failed: {e}");
                    if stopping {
                        return;
                    }
                    std::thread::sleep(ACCEPT_POLL);
                }
            }
        }
    }

    fn start_unix(&self, stream: UnixStream) -> Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let stream = Arc::new(stream);
        let id = self.register(Peer::Unix(stream.clone()));
        let name = format!("unix connection #{}", id.0);
        self.spawn(id, name, stream)
    }

    fn start_tcp(&self, stream: TcpStream, peer: std::net::SocketAddr) -> Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        // Pongs must leave at once, not wait for more bytes.
        stream.set_nodelay(true)?;
        // Pings' arrival times (see `rtrace::rxstamp`); read times without.
        let _ = rtrace::rxstamp::enable(&stream);
        let stream = Arc::new(stream);
        let id = self.register(Peer::Tcp(stream.clone()));
        let name = format!("tcp connection #{} from {peer}", id.0);
        self.spawn(id, name, stream)
    }

    fn register(&self, peer: Peer) -> ConnId {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        if let Ok(mut peers) = self.peers.lock() {
            peers.insert(id, peer);
        }
        id
    }

    fn spawn<S>(&self, id: ConnId, name: String, socket: Arc<S>) -> Result<()>
    where
        S: TimedRecv + Send + Sync + 'static,
        for<'a> &'a S: Write,
    {
        let handler = self.handler.clone();
        let peers = self.peers.clone();
        let arrival_ns = Arc::new(AtomicU64::new(0));
        let input = TimedInput {
            socket: socket.clone(),
            arrival_ns: arrival_ns.clone(),
        };
        let reply = SharedOutput(socket);
        std::thread::Builder::new()
            .name(format!("stream #{}", id.0))
            .spawn(move || {
                handler(Accepted {
                    conn: id,
                    name,
                    input: Box::new(input),
                    reply: Box::new(reply),
                    arrival_ns,
                });
                if let Ok(mut peers) = peers.lock() {
                    peers.remove(&id);
                }
            })
            .context("starting a stream reader thread")?;
        Ok(())
    }
}

/// Reads from a shared socket (the registry keeps a handle to close it),
/// noting when what each read returns arrived.
struct TimedInput<S> {
    socket: Arc<S>,
    arrival_ns: Arc<AtomicU64>,
}

/// Writes to a shared socket.
struct SharedOutput<S>(Arc<S>);

/// A socket read that may say when its bytes arrived (see `rxstamp`).
trait TimedRecv {
    fn recv_timed(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)>;
}

impl TimedRecv for TcpStream {
    fn recv_timed(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        rtrace::rxstamp::recv(self, buf)
    }
}

impl TimedRecv for UnixStream {
    fn recv_timed(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        let mut socket = self;
        socket.read(buf).map(|n| (n, None))
    }
}

impl<S: TimedRecv> Read for TimedInput<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, arrived) = self.socket.recv_timed(buf)?;
        if n > 0 {
            let at = arrived.unwrap_or_else(rtrace::clock::monotonic_ns);
            self.arrival_ns.store(at, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl<S> Write for SharedOutput<S>
where
    for<'a> &'a S: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
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

/// Decodes one stream and forwards it; always ends with `Closed`. Greets
/// a peer that takes part in the clock exchange and answers its pings on
/// `reply`.
pub fn serve(accepted: Accepted, tx: &Sender<Arrival>) {
    let Accepted {
        conn,
        name,
        input,
        reply,
        arrival_ns,
    } = accepted;
    let mut responder = Responder::new(reply, arrival_ns);
    let bytes = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: BufReader::with_capacity(1 << 16, input),
        bytes: bytes.clone(),
    };
    let (end, error) = forward(conn, name.clone(), counting, &mut responder, tx);
    let _ = tx.send(Arrival::Closed {
        conn,
        end,
        error: error.map(|e| format!("{name}: {e}")),
        bytes: bytes.load(Ordering::Relaxed),
    });
}

/// Forwards a stream's items; returns how it ended and, for a stream
/// closed because of bad input, why.
fn forward<R: Read>(
    conn: ConnId,
    name: String,
    input: R,
    responder: &mut Responder,
    tx: &Sender<Arrival>,
) -> (StreamEnd, Option<String>) {
    let broken = StreamEnd {
        truncated: true,
        ..StreamEnd::default()
    };
    let mut reader = match FrameReader::with_header(input, name).and_then(EventReader::new) {
        Ok(reader) => reader,
        Err(e) => return (broken, Some(e.to_string())),
    };
    let Some(hello) = reader.hello() else {
        return (broken, Some("closed before sending its hello".into()));
    };
    responder.greet(hello);
    let _ = tx.send(Arrival::Hello {
        conn,
        process: ProcessInfo::from(hello),
    });
    let mut clock = StreamClock::for_hello(hello);
    let mut events = 0u64;
    let error = loop {
        let item = match reader.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        };
        let mut items = vec![item];
        reader.take_ready(&mut items);
        responder.answer_pings(&items);
        events += items
            .iter()
            .filter(|i| matches!(i, StreamItem::Event(_)))
            .count() as u64;
        let mut ready = Vec::with_capacity(items.len() + 1);
        clock.process(items, &mut ready);
        if !ready.is_empty() && tx.send(Arrival::Items { conn, items: ready }).is_err() {
            break None;
        }
    };
    let mut ready = Vec::new();
    clock.finish(&mut ready);
    if !ready.is_empty() {
        let _ = tx.send(Arrival::Items { conn, items: ready });
    }
    let end = StreamEnd {
        events,
        lost: reader.lost(),
        truncated: error.is_some() || reader.truncated(),
        last_ts_ns: 0,
    };
    (end, error)
}
