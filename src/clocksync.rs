//! The clock exchange between a recorder and its collector (NTP/Cristian
//! style): the samples it yields, and the recorder's end of it.
//!
//! On a live connection the collector writes a `CollectorHello` first; a
//! recorder that has read it sends `ClockPing {t1}`, the collector's reader
//! thread answers at once with `ClockPong {t1, t2, t3}` (its own
//! CLOCK_MONOTONIC), and the recorder stamps `t4` as soon as the pong is
//! read. The recorder then reports the sample in its stream (`ClockSync`),
//! where the collector turns samples into an offset estimate. The exchange
//! runs in a burst right after connecting and once per interval after that;
//! a collector that never greets (an older one) is never pinged.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::clock;
use crate::wire::{self, pb, Body};
use crate::{Error, Result};

/// One completed exchange. `ping_sent_ns` (t1) and `pong_received_ns` (t4)
/// are read on the stream's clock, `ping_received_ns` (t2) and
/// `pong_sent_ns` (t3) on the collector's; all CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncSample {
    pub ping_sent_ns: u64,
    pub ping_received_ns: u64,
    pub pong_sent_ns: u64,
    pub pong_received_ns: u64,
    /// Which hop of the stream's way to the merging collector (0: the
    /// writer's own connection; n: from the n-th relay on).
    pub hop: u32,
}

impl SyncSample {
    /// The round trip without the collector's turnaround:
    /// `(t4 - t1) - (t3 - t2)`, never negative.
    pub fn round_trip_ns(&self) -> u64 {
        let total = self.pong_received_ns.saturating_sub(self.ping_sent_ns);
        let turnaround = self.pong_sent_ns.saturating_sub(self.ping_received_ns);
        total.saturating_sub(turnaround)
    }

    /// The stream's clock minus the collector's, in ns:
    /// `((t1 - t2) + (t4 - t3)) / 2`, exact if both directions took as long.
    pub fn offset_ns(&self) -> i64 {
        let stream = i128::from(self.ping_sent_ns) + i128::from(self.pong_received_ns);
        let collector = i128::from(self.ping_received_ns) + i128::from(self.pong_sent_ns);
        ((stream - collector) / 2).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// How far the true offset can be from `offset_ns`: half the round
    /// trip.
    pub fn uncertainty_ns(&self) -> u64 {
        self.round_trip_ns() / 2
    }

    /// The middle of the exchange on the stream's clock.
    pub fn stream_midpoint_ns(&self) -> u64 {
        self.ping_sent_ns / 2 + self.pong_received_ns / 2
    }
}

/// How a recorder (or relay) takes part in the clock exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// Time between rounds of exchanges after the first burst (and the
    /// first seconds' faster rounds); `None`: no exchange.
    pub interval: Option<Duration>,
    /// Exchanges right after connecting (the best one counts).
    pub burst: u32,
    /// Longest wait for a pong, and right after connecting for the
    /// collector's hello.
    pub timeout: Duration,
}

impl Default for SyncConfig {
    /// A burst of 16 exchanges at connect, then rounds of 3: every 100 ms
    /// for 5 s, then every 2 s; 50 ms timeout.
    fn default() -> SyncConfig {
        SyncConfig {
            interval: Some(Duration::from_secs(2)),
            burst: 16,
            timeout: Duration::from_millis(50),
        }
    }
}

/// The environment variable that sets the exchange interval in seconds
/// (`0` or `off`: no exchange).
pub const INTERVAL_ENV: &str = "RTRACE_CLOCK_SYNC";

impl SyncConfig {
    /// The default, with the interval from `$RTRACE_CLOCK_SYNC` if set.
    pub fn from_env() -> Result<SyncConfig> {
        let Ok(text) = std::env::var(INTERVAL_ENV) else {
            return Ok(SyncConfig::default());
        };
        let interval = parse_interval(&text)
            .map_err(|e| Error::Config(format!("{INTERVAL_ENV}={text:?}: {e}")))?;
        Ok(SyncConfig {
            interval,
            ..SyncConfig::default()
        })
    }

    /// This config with the interval given as text: seconds, or `off`.
    pub fn with_interval(self, text: &str) -> Result<SyncConfig> {
        let interval = parse_interval(text)
            .map_err(|e| Error::Config(format!("clock exchange interval {text:?}: {e}")))?;
        Ok(SyncConfig { interval, ..self })
    }
}

/// Seconds between 0.01 and 3600, or `0`/`off` (no exchange: `None`).
fn parse_interval(text: &str) -> std::result::Result<Option<Duration>, &'static str> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(s) if s.is_finite() && (0.01..=3600.0).contains(&s) => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        _ => Err("give seconds between 0.01 and 3600, or 0/off"),
    }
}

/// A two-way byte stream whose reads can time out.
pub trait Duplex: Read + Write {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Reads like `read`; also returns when the bytes arrived (CLOCK_MONOTONIC
    /// ns), if the kernel says (see `rxstamp`).
    fn read_timed(&mut self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        self.read(buf).map(|n| (n, None))
    }
}

impl Duplex for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn read_timed(&mut self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        crate::rxstamp::recv(self, buf)
    }
}

impl Duplex for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

/// What a `CollectorSink` does with clocks: the snapshot that starts each
/// connection and spill file, and where exchange samples go.
pub trait Timekeeper: Send {
    /// Appends the clock snapshot frame that starts a connection or a
    /// spill file (every batch after it must be covered by it or a later
    /// one).
    fn snapshot_frame(&mut self, out: &mut Vec<u8>);
    /// Takes the samples of the exchanges just made on the current
    /// connection (`fresh`: the first since it connected) and appends the
    /// frames to write on that connection.
    fn samples(&mut self, samples: &[SyncSample], fresh: bool, out: &mut Vec<u8>);
}

/// The recorder's timekeeper: fresh snapshots of this process's counter;
/// every sample reported in the stream as a `ClockSync` frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalClock;

impl Timekeeper for LocalClock {
    fn snapshot_frame(&mut self, out: &mut Vec<u8>) {
        wire::encode_frame(wire::clock_body(&clock::snapshot()), out);
    }

    fn samples(&mut self, samples: &[SyncSample], _fresh: bool, out: &mut Vec<u8>) {
        for sample in samples {
            wire::encode_frame(wire::sync_body(sample), out);
        }
    }
}

/// Exchanges per round after the burst: back to back, so the later ones
/// find the collector's reader awake (the best of them counts).
const PER_ROUND: u32 = 3;
/// A collector hello that did not come within the first wait is looked
/// for (without waiting) this often, for this long: a busy collector may
/// take a while to accept (older ones never greet).
const HELLO_POLL: Duration = Duration::from_millis(5);
const HELLO_PATIENCE: Duration = Duration::from_secs(10);
/// How long after connecting a stream that ends waits for the collector's
/// hello (see `SyncLink::run_at_end`).
const END_HELLO_WAIT: Duration = Duration::from_millis(250);
/// For this long after connecting, an exchange every `FAST_START_EVERY`.
const FAST_START_FOR: Duration = Duration::from_secs(5);
const FAST_START_EVERY: Duration = Duration::from_millis(100);
/// Largest frame a collector may write back (they are a few dozen bytes).
const MAX_REPLY_BYTES: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Waiting for the collector's hello: once for up to the timeout, then
    /// in non-blocking looks (see `HELLO_POLL`) until `give_up`.
    AwaitHello { waited: bool, give_up: Instant },
    /// Exchanging (for as long as the connection lasts); `burst` until the
    /// first burst ran.
    Ready { burst: bool },
    /// No exchange on this connection.
    Off,
}

/// The recorder's end of the exchange on one connection.
#[derive(Debug)]
pub struct SyncLink {
    config: SyncConfig,
    interval: Duration,
    state: LinkState,
    inbox: Vec<u8>,
    next_id: u64,
    next_due: Instant,
    /// Rounds in a row whose pong did not come in time.
    misses: u32,
    fresh: bool,
    connected_at: Instant,
}

impl SyncLink {
    /// A link for a connection that was just opened.
    pub fn new(config: SyncConfig) -> SyncLink {
        let state = match config.interval {
            Some(_) => LinkState::AwaitHello {
                waited: false,
                give_up: Instant::now() + HELLO_PATIENCE,
            },
            None => LinkState::Off,
        };
        SyncLink {
            config,
            interval: config.interval.unwrap_or(Duration::MAX),
            state,
            inbox: Vec::new(),
            next_id: 1,
            next_due: Instant::now(),
            misses: 0,
            fresh: true,
            connected_at: Instant::now(),
        }
    }

    /// The time to the next exchange: short in the first seconds (samples
    /// spread over time beat a burst that a moment of load spoils), then
    /// the configured interval.
    fn next_interval(&self) -> Duration {
        if self.connected_at.elapsed() < FAST_START_FOR {
            self.interval.min(FAST_START_EVERY)
        } else {
            self.interval
        }
    }

    /// True while the link may still exchange.
    pub fn active(&self) -> bool {
        self.state != LinkState::Off
    }

    /// Runs what is due on `conn` (waiting for the hello, the burst, a
    /// periodic exchange). Returns the samples taken and whether they are
    /// the connection's first; an error means the connection broke.
    pub fn run(&mut self, conn: &mut dyn Duplex) -> io::Result<(Vec<SyncSample>, bool)> {
        if let LinkState::AwaitHello { waited, give_up } = self.state {
            self.await_hello(conn, waited, give_up)?;
        }
        let LinkState::Ready { burst } = self.state else {
            return Ok((Vec::new(), false));
        };
        let wanted = if burst {
            self.config.burst.max(1)
        } else if Instant::now() >= self.next_due {
            PER_ROUND
        } else {
            return Ok((Vec::new(), false));
        };
        let mut samples = Vec::new();
        let mut missed = false;
        for _ in 0..wanted {
            match self.exchange(conn)? {
                Some(sample) => samples.push(sample),
                None => {
                    missed = true;
                    break;
                }
            }
        }
        // A collector too busy to answer in time is asked again a little
        // later each time (0.2, 0.4, 0.8 s... up to the interval): the
        // writer must not spend its time waiting.
        self.misses = if missed { self.misses + 1 } else { 0 };
        let wait = if missed {
            let backoff = FAST_START_EVERY * 2u32.saturating_pow(self.misses.min(8));
            backoff.min(self.interval)
        } else {
            self.next_interval()
        };
        self.next_due = Instant::now() + wait;
        self.state = LinkState::Ready { burst: false };
        let fresh = self.fresh && !samples.is_empty();
        if fresh {
            self.fresh = false;
        }
        Ok((samples, fresh))
    }

    /// Before the stream ends: a link still waiting for the collector's
    /// hello (a short-lived process may end before the collector greets)
    /// waits for it until `END_HELLO_WAIT` after connecting, then runs
    /// its burst, so that the stream gets a sample before its end marker.
    pub fn run_at_end(&mut self, conn: &mut dyn Duplex) -> io::Result<(Vec<SyncSample>, bool)> {
        if let LinkState::AwaitHello { .. } = self.state {
            let deadline = self.connected_at + END_HELLO_WAIT;
            if Instant::now() < deadline {
                let hello = self.read_until(conn, deadline, |body| {
                    matches!(body, Body::CollectorHello(_))
                })?;
                if let Some((body, _)) = hello {
                    self.state = greeted(&body);
                }
            }
        }
        match self.state {
            LinkState::Ready { burst: true } => self.run(conn),
            _ => Ok((Vec::new(), false)),
        }
    }

    fn await_hello(
        &mut self,
        conn: &mut dyn Duplex,
        waited: bool,
        give_up: Instant,
    ) -> io::Result<()> {
        let now = Instant::now();
        let wait = if !waited {
            self.config.timeout
        } else if now >= self.next_due {
            Duration::ZERO
        } else {
            return Ok(());
        };
        let hello = self.read_until(conn, now + wait, |body| {
            matches!(body, Body::CollectorHello(_))
        })?;
        self.state = match hello {
            Some((body, _)) => greeted(&body),
            None if now >= give_up => LinkState::Off,
            None => {
                self.next_due = Instant::now() + HELLO_POLL;
                LinkState::AwaitHello {
                    waited: true,
                    give_up,
                }
            }
        };
        Ok(())
    }

    /// One ping and its pong; `None` if the pong did not come in time.
    fn exchange(&mut self, conn: &mut dyn Duplex) -> io::Result<Option<SyncSample>> {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::with_capacity(32);
        let t1 = clock::monotonic_ns();
        wire::encode_frame(
            Body::ClockPing(pb::ClockPing { id, sent_ns: t1 }),
            &mut frame,
        );
        conn.write_all(&frame)?;
        let deadline = Instant::now() + self.config.timeout;
        let pong = self.read_until(
            conn,
            deadline,
            |body| matches!(body, Body::ClockPong(p) if p.id == id),
        )?;
        let Some((Body::ClockPong(pong), t4)) = pong else {
            return Ok(None);
        };
        if pong.ping_sent_ns != t1 {
            return Ok(None);
        }
        Ok(Some(SyncSample {
            ping_sent_ns: t1,
            ping_received_ns: pong.received_ns,
            pong_sent_ns: pong.sent_ns,
            pong_received_ns: t4,
            hop: 0,
        }))
    }

    /// Reads frames from the collector until one that `wanted` accepts
    /// (returned with the CLOCK_MONOTONIC time its last byte arrived: the
    /// kernel's receive time where there is one, else the read's) or until
    /// `deadline`. Other frames (stale pongs, unknown ones) are
    /// dropped.
    fn read_until(
        &mut self,
        conn: &mut dyn Duplex,
        deadline: Instant,
        wanted: impl Fn(&Body) -> bool,
    ) -> io::Result<Option<(Body, u64)>> {
        let mut read_at_ns = clock::monotonic_ns();
        let mut chunk = [0u8; 512];
        loop {
            while let Some(body) = self.next_reply()? {
                if wanted(&body) {
                    return Ok(Some((body, read_at_ns)));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            conn.set_read_timeout(Some(left.max(Duration::from_micros(1))))?;
            match conn.read_timed(&mut chunk) {
                Ok((0, _)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok((n, arrived)) => {
                    read_at_ns = arrived.unwrap_or_else(clock::monotonic_ns);
                    self.inbox.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline && self.inbox.is_empty() {
                return Ok(None);
            }
        }
    }

    /// The next whole frame in the inbox, if any. Frames of unknown type
    /// come back as `None` bodies and are skipped.
    fn next_reply(&mut self) -> io::Result<Option<Body>> {
        loop {
            let (len, header) = match wire::batch::varint(&self.inbox) {
                Some(prefix) => prefix,
                // A varint is at most 10 bytes: not there yet, or never.
                None if self.inbox.len() >= MAX_VARINT_BYTES => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the collector wrote back a frame whose length is not a valid varint",
                    ))
                }
                None => return Ok(None),
            };
            if len > MAX_REPLY_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the collector wrote a {len}-byte frame back"),
                ));
            }
            let end = header + len as usize;
            if self.inbox.len() < end {
                return Ok(None);
            }
            let decoded = wire::decode_frame(&self.inbox[header..end]);
            self.inbox.drain(..end);
            match decoded {
                Ok(Some(body)) => return Ok(Some(body)),
                Ok(None) => continue,
                Err(reason) => return Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
            }
        }
    }
}

/// The state after the collector's hello: exchanging if it answers pings.
fn greeted(hello: &Body) -> LinkState {
    match hello {
        Body::CollectorHello(h) if h.clock_pong => LinkState::Ready { burst: true },
        _ => LinkState::Off,
    }
}

/// The longest a varint may be (a u64's 64 bits, 7 a byte).
const MAX_VARINT_BYTES: usize = 10;

/// The collector's hello frame, with this host's name and boot id.
pub fn collector_hello() -> Vec<u8> {
    let mut out = Vec::new();
    let hello = pb::CollectorHello {
        protocol_version: u32::from(wire::FORMAT_VERSION),
        clock_pong: true,
        host: crate::host::name(),
        boot_id: crate::host::boot_id(),
    };
    wire::encode_frame(Body::CollectorHello(hello), &mut out);
    out
}

/// The pong frame answering ping `id` (sent at `ping_sent_ns`, read at
/// `received_ns`); stamps t3 as late as it can (the caller writes it at
/// once).
pub fn pong_frame(id: u64, ping_sent_ns: u64, received_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    let pong = pb::ClockPong {
        id,
        ping_sent_ns,
        received_ns,
        sent_ns: clock::monotonic_ns(),
    };
    wire::encode_frame(Body::ClockPong(pong), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symmetric_exchange_gives_the_offset_and_half_the_round_trip() {
        // The stream's clock is 1000 ns ahead; 40 ns each way, 20 ns inside.
        let sample = SyncSample {
            ping_sent_ns: 11_000,
            ping_received_ns: 10_040,
            pong_sent_ns: 10_060,
            pong_received_ns: 11_100,
            hop: 0,
        };
        assert_eq!(sample.offset_ns(), 1000);
        assert_eq!(sample.round_trip_ns(), 80);
        assert_eq!(sample.uncertainty_ns(), 40);
        assert_eq!(sample.stream_midpoint_ns(), 11_050);
    }

    #[test]
    fn intervals_parse_from_text() {
        let base = SyncConfig::default();
        assert_eq!(base.with_interval("off").unwrap().interval, None);
        assert_eq!(base.with_interval("0").unwrap().interval, None);
        assert_eq!(
            base.with_interval(" 0.5 ").unwrap().interval,
            Some(Duration::from_millis(500))
        );
        assert!(base.with_interval("soon").is_err());
        assert!(base.with_interval("-1").is_err());
    }

    /// A reply is taken once all of its bytes are in; a length that can
    /// never be a varint is an error at once, not a wait for more bytes
    /// (which a collector sending on would have made endless).
    #[test]
    fn replies_need_all_their_bytes_and_a_valid_length() {
        let pong = pong_frame(7, 1_000, 2_000);
        let reply = |bytes: &[u8]| {
            let mut link = SyncLink::new(SyncConfig::default());
            link.inbox.extend_from_slice(bytes);
            link.next_reply()
        };
        assert!(matches!(reply(&pong), Ok(Some(Body::ClockPong(p))) if p.id == 7));
        for cut in 0..pong.len() {
            assert!(matches!(reply(&pong[..cut]), Ok(None)), "{cut} bytes");
        }
        assert!(
            matches!(reply(&[0x80; 9]), Ok(None)),
            "nine bytes of a length"
        );
        let mut tenth_too_big = vec![0xff; 9];
        tenth_too_big.extend_from_slice(&[0x02, 0, 0]);
        for bad in [&[0xff; 10][..], &[0x80; 64][..], &tenth_too_big[..]] {
            let error = reply(bad).expect_err("a malformed length");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(error.to_string().contains("not a valid varint"), "{error}");
        }
    }
}
