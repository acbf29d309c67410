//! Relay mode (`rtrace-collect --listen ... --forward ADDR`): a host-local
//! collector that forwards every local stream to a central collector, so
//! that the central timeline is the same as if each process had connected
//! to it directly.
//!
//! Each local connection gets its own upstream connection (a
//! `CollectorSink`, with its spill file and reconnects), and its frames go
//! up unchanged except for two things:
//!
//! - clock pings are answered here, at once, with this host's clock (the
//!   recorder's samples, hop 0, go up as they are); and the relay runs its
//!   own clock exchange with the central collector on each upstream
//!   connection, whose samples it adds to the stream as hop n (this relay's
//!   place in `relayed_by`). The central collector estimates each hop and
//!   adds the offsets (and their uncertainties) up: the recorder's clock
//!   against the central one, with every sample of both hops used as it
//!   comes, as for a direct connection.
//! - the hello names this host in `relayed_by`.
//!
//! The listening side applies the same access rules as a collector (see
//! `access`, `handshake`): token on TCP, limits, hello timeout, and the
//! `HelloReply` local recorders wait for. Upstream, the relay is a
//! recorder to the central collector: it sends the token (`--token`,
//! `RTRACE_TOKEN`) if it has one and waits for the central collector's
//! `HelloReply` before forwarding; a refused or unreachable upstream
//! spills to `--spill-dir`.
//!
//! Nothing is merged here: one stream per process reaches the central
//! collector, which merges them all. That keeps the central file equal to
//! a direct collection (same streams, same per-stream ends and losses),
//! keeps a broken stream from affecting the others, and needs no
//! multiplexing protocol; the cost is one upstream connection per process.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rtrace::clocksync::{SyncConfig, SyncSample, Timekeeper};
use rtrace::sink::{CollectorSink, Sink};
use rtrace::wire::{self, pb, Body};
use rtrace::{Address, Token};

use crate::access::Access;
use crate::clocksync::{Estimator, Fit};
use crate::ingest::{Accepted, ConnId, Handler, Ingest, Throttle};
use crate::stop::Stop;

/// How to relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub listen: Vec<Address>,
    /// Who may connect to the relay (as for a collector).
    pub access: Access,
    /// Sent to the central collector on every upstream connection.
    pub token: Option<Token>,
    /// The central collector.
    pub forward: Address,
    /// Where spill files go while the central collector is unreachable
    /// (created at start if missing).
    pub spill_dir: PathBuf,
    /// After a shutdown request, how long open streams may keep sending.
    pub drain: Duration,
    /// The clock exchange with the central collector.
    pub sync: SyncConfig,
}

/// What the relay did with one local stream.
#[derive(Debug, Clone, Default)]
pub struct RelayedStream {
    pub session: String,
    pub pid: u32,
    /// Frames forwarded (or spilled, or lost: see `lost_frames`).
    pub frames: u64,
    /// The recorder's clock minus this host's (its samples, relayed).
    pub local: Option<Fit>,
    /// This host's clock minus the central collector's.
    pub upstream: Option<Fit>,
    pub error: Option<String>,
    /// The stream's spill file, if some of it went there (the central
    /// collector unreachable, or refusing it).
    pub spilled_to: Option<PathBuf>,
    /// Frames that could go neither to the central collector nor to the
    /// spill file, and why the spill file could not take them.
    pub lost_frames: u64,
    pub spill_error: Option<String>,
}

impl RelayedStream {
    /// What became of the stream: `forwarded`, `spilled to FILE`, or the
    /// frames lost and why; after the error that closed it, if one did.
    pub fn outcome(&self) -> String {
        let went = match (&self.spill_error, &self.spilled_to) {
            (Some(why), _) if self.lost_frames > 0 => {
                format!("{} frames lost: {why}", self.lost_frames)
            }
            (_, Some(path)) => format!("spilled to {}", path.display()),
            _ => "forwarded".into(),
        };
        match &self.error {
            Some(error) => format!("{error}; {went}"),
            None => went,
        }
    }
}

/// What a relay did.
#[derive(Debug, Clone, Default)]
pub struct Relayed {
    /// Per accepted stream.
    pub streams: Vec<RelayedStream>,
    /// Connections refused (token, limits, protocol version).
    pub refused: u64,
    /// Connections closed before their hello was accepted.
    pub broken: u64,
}

/// The relay's handler of accepted connections.
struct Relay {
    options: RelayOptions,
    done: Mutex<Vec<RelayedStream>>,
    broken: std::sync::atomic::AtomicU64,
    throttle: Throttle,
}

impl Handler for Relay {
    fn accepted(&self, stream: Accepted) {
        let stream = serve(&self.options, stream);
        if let Ok(mut done) = self.done.lock() {
            done.push(stream);
        }
    }

    fn broken(&self, _conn: ConnId, error: String, _bytes: u64) {
        self.broken.fetch_add(1, Ordering::Relaxed);
        if let Some(error) = self.throttle.message(error) {
            eprintln!("rtrace-collect: closed {error}");
        }
    }

    fn refused(&self, message: String) {
        eprintln!("rtrace-collect: {message}");
    }
}

/// Relays until `stop` is set, then drains; returns what each stream saw.
pub fn relay(
    options: &RelayOptions,
    stop: &Stop,
    on_ready: impl FnOnce(&[Address]),
) -> Result<Relayed> {
    prepare_spill_dir(&options.spill_dir)?;
    let handler = Arc::new(Relay {
        options: options.clone(),
        done: Mutex::new(Vec::new()),
        broken: Default::default(),
        throttle: Throttle::new(),
    });
    let mut ingest = Ingest::start_with(&options.listen, options.access.clone(), handler.clone())?;
    on_ready(ingest.addresses());
    while !stop.wait(Duration::from_secs(1)) {}
    ingest.stop_accepting();
    let deadline = Instant::now() + options.drain;
    while ingest.open_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    ingest.close_all();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ingest.open_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = ingest.refused();
    drop(ingest);
    Ok(Relayed {
        streams: handler.done.lock().map(|d| d.clone()).unwrap_or_default(),
        refused,
        broken: handler.broken.load(Ordering::Relaxed),
    })
}

/// Creates `dir` if it is missing and checks that files can be made in it,
/// before anything listens: a relay that cannot spill loses every stream
/// while the central collector is unreachable.
fn prepare_spill_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the spill directory {}", dir.display()))?;
    let probe = dir.join(format!(".rtrace-relay-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("cannot write in the spill directory {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Frames waiting for the upstream thread.
const CHANNEL_FRAMES: usize = 1024;

/// How long a local recorder's welcome waits for its upstream connection;
/// well below a recorder's wait for the reply (2 s).
const UPSTREAM_WAIT: Duration = Duration::from_secs(1);

/// Serves one local stream (past its handshake, greeted): answers pings
/// here, hands every other frame to an upstream thread.
fn serve(options: &RelayOptions, accepted: Accepted) -> RelayedStream {
    let Accepted {
        conn,
        name,
        reader,
        process,
        welcome,
        ..
    } = accepted;
    let mut stream = RelayedStream {
        session: process.session.clone(),
        pid: process.pid,
        ..RelayedStream::default()
    };
    let Some(hello) = reader.hello().cloned() else {
        stream.error = Some(format!("{name}: no hello"));
        return stream;
    };
    let mut frames = reader.into_frames();
    let spill = options.spill_dir.join(format!(
        "rtrace-relay-{}-{}-{}.spill.rtrace",
        sanitize(&process.session),
        process.pid,
        conn.0
    ));
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_FRAMES);
    let (ready_tx, ready) = crossbeam_channel::bounded(1);
    let upstream = {
        let (address, sync) = (options.forward.clone(), options.sync);
        let token = options.token.clone();
        let stream = format!(
            "session {:?} (pid {}, {name})",
            process.session, process.pid
        );
        std::thread::Builder::new()
            .name(format!("upstream #{}", conn.0))
            .spawn(move || {
                Upstream::new(address, spill, sync, token, stream).run(hello, &rx, &ready_tx)
            })
    };
    let upstream = match upstream {
        Ok(handle) => handle,
        Err(e) => {
            stream.error = Some(format!("cannot start an upstream thread: {e}"));
            return stream;
        }
    };
    // The recorder starts once welcomed: by then the central collector
    // should know the stream (see `ingest::Welcome`). An upstream that
    // takes longer (unreachable, slow) spills; the recorder is not kept
    // waiting for it beyond `UPSTREAM_WAIT`.
    let _ = ready.recv_timeout(UPSTREAM_WAIT);
    let mut responder = match welcome.send() {
        Ok(responder) => responder,
        Err(e) => {
            drop(tx);
            let _ = upstream.join();
            stream.error = Some(format!("{name}: could not answer the hello: {e}"));
            return stream;
        }
    };
    loop {
        match frames.next_frame() {
            Ok(Some(Body::ClockPing(ping))) => {
                let received_ns = responder.arrival_ns();
                responder.answer(ping.id, ping.sent_ns, received_ns)
            }
            Ok(Some(body)) => {
                stream.frames += 1;
                if tx.send(body).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                stream.error = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    drop(frames);
    drop(responder);
    if let Ok(report) = upstream.join() {
        stream.local = report.local;
        stream.upstream = report.upstream;
        stream.spilled_to = report.spilled_to;
        stream.lost_frames = report.lost.frames;
        stream.spill_error = report.lost.why;
    }
    stream
}

fn sanitize(session: &str) -> String {
    session
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// The clocks of one relayed stream, shared by the upstream thread and
/// the timekeeper inside its sink.
#[derive(Default)]
struct RelayClock {
    /// This relay's hop number (its place in the stream's `relayed_by`).
    hop: u32,
    /// This host's clock against the central collector's (for the report).
    upstream: Estimator,
    upstream_fit: Option<Fit>,
    /// The recorder's clock against this host's (for the report).
    local: Estimator,
    local_fit: Option<Fit>,
    /// The recorder's last snapshot frame: it starts each upstream
    /// connection and spill file.
    last_snapshot: Vec<u8>,
    /// The latest samples of the hops below this one, sent again on a new
    /// upstream connection (a new stream for the central collector).
    recent: VecDeque<SyncSample>,
}

/// Samples of the hops below sent again on a new upstream connection.
const REPLAYED: usize = 16;

/// The timekeeper of an upstream sink: the recorder's snapshots; this
/// host's exchanges with the central collector go into the stream as
/// samples of this relay's hop.
struct RelayKeeper(Arc<Mutex<RelayClock>>);

impl Timekeeper for RelayKeeper {
    fn snapshot_frame(&mut self, out: &mut Vec<u8>) {
        if let Ok(clock) = self.0.lock() {
            out.extend_from_slice(&clock.last_snapshot);
        }
    }

    fn samples(&mut self, samples: &[SyncSample], fresh: bool, out: &mut Vec<u8>) {
        let Ok(mut clock) = self.0.lock() else {
            return;
        };
        if fresh {
            for sample in &clock.recent {
                wire::encode_frame(wire::sync_body(sample), out);
            }
        }
        for sample in samples {
            let sample = SyncSample {
                hop: clock.hop,
                ..*sample
            };
            if let Some(fit) = clock.upstream.add(&sample) {
                clock.upstream_fit = Some(fit);
            }
            wire::encode_frame(wire::sync_body(&sample), out);
        }
    }
}

/// How an upstream thread ended.
struct UpstreamReport {
    local: Option<Fit>,
    upstream: Option<Fit>,
    spilled_to: Option<PathBuf>,
    lost: Lost,
}

/// Frames of a stream that went neither upstream nor to its spill file.
#[derive(Default)]
struct Lost {
    frames: u64,
    /// The first failure.
    why: Option<String>,
}

/// The upstream side of one relayed stream.
struct Upstream {
    sink: CollectorSink,
    clock: Arc<Mutex<RelayClock>>,
    /// Names the stream in messages.
    stream: String,
    spill: PathBuf,
    lost: Lost,
}

impl Upstream {
    fn new(
        address: Address,
        spill: PathBuf,
        sync: SyncConfig,
        token: Option<Token>,
        stream: String,
    ) -> Upstream {
        let clock = Arc::new(Mutex::new(RelayClock::default()));
        let keeper = Box::new(RelayKeeper(clock.clone()));
        Upstream {
            sink: CollectorSink::with_clock(address, spill.clone(), sync, keeper).with_token(token),
            clock,
            stream,
            spill,
            lost: Lost::default(),
        }
    }

    /// Counts a frame the sink could not take (upstream down and the spill
    /// file not writable); says so at the first.
    fn written(&mut self, result: std::io::Result<()>) {
        let Err(error) = result else {
            return;
        };
        self.lost.frames += 1;
        if self.lost.why.is_none() {
            let why = format!(
                "cannot write its spill file {}: {error}",
                self.spill.display()
            );
            eprintln!(
                "rtrace-collect: {}: {why}; its frames are lost while the central collector is unreachable",
                self.stream
            );
            self.lost.why = Some(why);
        }
    }

    /// Forwards the stream; says on `ready` once its hello went upstream
    /// (accepted, or spilled).
    fn run(
        mut self,
        mut hello: pb::Hello,
        frames: &Receiver<Body>,
        ready: &crossbeam_channel::Sender<()>,
    ) -> UpstreamReport {
        hello.relayed_by.push(rtrace::host::name());
        if let Ok(mut clock) = self.clock.lock() {
            clock.hop = hello.relayed_by.len() as u32;
        }
        self.write(Body::Hello(hello));
        let _ = ready.try_send(());
        let mut last_flush = Instant::now();
        loop {
            match frames.recv_timeout(Duration::from_millis(100)) {
                Ok(body) => self.forward(body),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.sink.sync_clock();
            if last_flush.elapsed() >= Duration::from_millis(100) {
                let _ = self.sink.flush();
                last_flush = Instant::now();
            }
        }
        let _ = self.sink.flush();
        self.sink.close();
        let clock = self.clock.lock();
        UpstreamReport {
            local: clock.as_ref().ok().and_then(|c| c.local_fit),
            upstream: clock.as_ref().ok().and_then(|c| c.upstream_fit),
            spilled_to: self.sink.spill_file().map(Path::to_owned),
            lost: std::mem::take(&mut self.lost),
        }
    }

    fn forward(&mut self, body: Body) {
        match body {
            Body::ClockSync(sync) => self.relay_sample((&sync).into()),
            Body::Clock(snapshot) => {
                let mut frame = Vec::new();
                wire::encode_frame(Body::Clock(snapshot), &mut frame);
                if let Ok(mut clock) = self.clock.lock() {
                    clock.last_snapshot.clone_from(&frame);
                }
                let written = self.sink.write_frame(&frame);
                self.written(written);
            }
            // Only this relay's connection to the recorder carries these
            // (the upstream sink sends its own token).
            Body::ClockPing(_) | Body::ClockPong(_) | Body::CollectorHello(_) | Body::Auth(_) => {}
            body => self.write(body),
        }
    }

    fn write(&mut self, body: Body) {
        let intern = matches!(body, Body::Hello(_) | Body::Function(_) | Body::Thread(_));
        let mut frame = Vec::new();
        wire::encode_frame(body, &mut frame);
        let written = if intern {
            self.sink.write_intern(&frame)
        } else {
            self.sink.write_frame(&frame)
        };
        self.written(written);
    }

    /// A sample of a hop below this relay: kept to send again on a new
    /// upstream connection, and sent up as it is (only on the current
    /// connection: a spill file has no use for it).
    fn relay_sample(&mut self, sample: SyncSample) {
        if let Ok(mut clock) = self.clock.lock() {
            if sample.hop + 1 == clock.hop {
                if let Some(fit) = clock.local.add(&sample) {
                    clock.local_fit = Some(fit);
                }
            }
            clock.recent.push_back(sample);
            if clock.recent.len() > REPLAYED {
                clock.recent.pop_front();
            }
        }
        let mut frame = Vec::new();
        wire::encode_frame(wire::sync_body(&sample), &mut frame);
        self.sink.write_live(&frame);
    }
}

/// The table printed when a relay ends: per stream, the offsets of its two
/// hops (recorder to this host, this host to the central collector).
pub fn table(streams: &[RelayedStream]) -> String {
    let mut rows = vec![[
        "session",
        "pid",
        "frames",
        "recorder - relay clock",
        "relay - central clock",
        "end",
    ]
    .map(String::from)
    .to_vec()];
    let fit = |fit: &Option<Fit>| {
        fit.map_or("not measured".into(), |f| {
            format!(
                "{:+.9} s ±{:.1} µs",
                f.offset_at(f.ref_ns) as f64 / 1e9,
                f.uncertainty_ns as f64 / 1000.0
            )
        })
    };
    for s in streams {
        let end = s.outcome();
        rows.push(vec![
            s.session.clone(),
            s.pid.to_string(),
            s.frames.to_string(),
            fit(&s.local),
            fit(&s.upstream),
            end,
        ]);
    }
    crate::report::aligned(&rows)
}
