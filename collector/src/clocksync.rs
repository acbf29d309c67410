//! Aligning a stream's clock with the collector's: the offset estimator
//! (NTP/Cristian style: the sample with the smallest round trip wins, and a
//! line through the best samples of the last minutes gives the drift), and
//! the per-stream stage that applies it before the merge.
//!
//! Timestamps in a stream are the recorder host's CLOCK_MONOTONIC. The
//! stage maps them, and the clock heartbeats that drive the merge's
//! watermark, to the collector's CLOCK_MONOTONIC by subtracting the
//! stream's estimated offset. The merge keeps each thread's order (an
//! event mapped before its thread's previous one, after the estimate moved
//! back, is clamped to it and counted).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rtrace::clocksync::{self, SyncSample};
use rtrace::timeline::{ClockOffset, ClockStatus};
use rtrace::wire::pb;
use rtrace::{Chunk, StreamItem};

/// This host's boot id, read once.
pub fn local_boot_id() -> &'static str {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID.get_or_init(rtrace::host::boot_id)
}

/// The collector's end of the exchange on one connection: greets a peer
/// that takes part (so it knows it may ping) and answers its pings at once.
///
/// Only such peers are greeted: they read what the collector writes, and
/// drain it before they close. A peer that never reads (an older recorder)
/// would close with the greeting unread, and the kernel would answer with
/// a reset that can make the collector lose the end of the stream.
pub struct Responder {
    out: Box<dyn AnswerOut>,
    broken: bool,
    /// The stream's end marker was read: the sending side is shut.
    ended: bool,
    /// When the bytes of the connection's latest read arrived (see
    /// `ingest::Accepted::arrival_ns`).
    arrival_ns: Arc<AtomicU64>,
}

impl Responder {
    /// A responder writing to `out`; `arrival_ns` says when the bytes of
    /// the connection's latest read arrived (a ping's t2: decoding is on
    /// the ping's way only, and would bias the offset by half its time).
    pub fn new(out: Box<dyn AnswerOut>, arrival_ns: Arc<AtomicU64>) -> Responder {
        Responder {
            out,
            broken: false,
            ended: false,
            arrival_ns,
        }
    }

    /// Greets a peer whose hello says it takes part in the exchange.
    pub fn greet(&mut self) {
        self.send(&clocksync::collector_hello());
    }

    /// When the bytes decoded last arrived (now, if no read said).
    pub fn arrival_ns(&self) -> u64 {
        match self.arrival_ns.load(Ordering::Relaxed) {
            0 => rtrace::clock::monotonic_ns(),
            ns => ns,
        }
    }

    /// Answers the `Ping`s among `chunks` (decoded just now).
    pub fn answer_pings(&mut self, chunks: &[Chunk]) {
        let received_ns = self.arrival_ns();
        for chunk in chunks {
            if let Chunk::Item(StreamItem::Ping { id, sent_ns }) = chunk {
                self.answer(*id, *sent_ns, received_ns);
            }
        }
    }

    /// Answers ping `id`, sent at `sent_ns` and read at `received_ns`.
    pub fn answer(&mut self, id: u64, sent_ns: u64, received_ns: u64) {
        let frame = clocksync::pong_frame(id, sent_ns, received_ns);
        self.send(&frame);
    }

    /// The stream's end marker has been read: nothing more will come to
    /// answer, so the sending side is shut at once. A recorder that reads
    /// what the collector writes waits for that before it closes (see
    /// `rtrace::sink::CollectorSink::close`). Shut only once the reader
    /// thread had handed the stream's last events to the merge, the
    /// recorder waited behind the merge and the file's writer on a busy
    /// CPU (~1 ms of a recording's stop on the 2-core development
    /// machine). Idempotent.
    pub fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.broken = true;
            self.out.shut();
        }
    }

    /// Writes `frame`; after a failure (a peer that does not read) writes
    /// nothing more.
    fn send(&mut self, frame: &[u8]) {
        if !self.broken && self.out.write_all(frame).is_err() {
            self.broken = true;
        }
    }
}

/// Where a `Responder` writes: the sending side of a stream's connection.
pub trait AnswerOut: Write + Send {
    /// Shuts the sending side: the peer reads its end.
    fn shut(&mut self);
}

/// Samples are grouped by this much stream time; each group keeps its
/// best (smallest round trip) sample.
const BUCKET_NS: u64 = 10_000_000_000;
/// Groups kept: the estimate follows the last 5 minutes.
const MAX_BUCKETS: usize = 30;
/// The drift is fitted once the best samples span this much time.
const MIN_DRIFT_SPAN_NS: u64 = 20_000_000_000;
/// Drift beyond this (500 ppm, the most NTP slews a clock) is not believed.
const MAX_DRIFT: f64 = 500e-6;
/// Samples whose uncertainty is below this all weigh the same in the fit.
const WEIGHT_FLOOR_NS: f64 = 1_000.0;
/// Groups whose best sample sets the reported uncertainty.
const RECENT_BUCKETS: usize = 3;

/// A sample as a point (stream time, offset), or a group's summary.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    bucket: u64,
    at_ns: u64,
    offset_ns: i64,
    uncertainty_ns: u64,
}

/// A group's summary: the mean of its samples near the best one (sorted
/// best first), with the best one's uncertainty.
fn summary(group: &[Point]) -> Point {
    let best = group[0];
    let limit = (best.uncertainty_ns as f64 * NEAR_BEST) as u64;
    let near: Vec<&Point> = group
        .iter()
        .take_while(|p| p.uncertainty_ns <= limit)
        .collect();
    let n = near.len() as i128;
    let mean = |f: &dyn Fn(&Point) -> i128| near.iter().map(|p| f(p)).sum::<i128>() / n;
    Point {
        at_ns: mean(&|p| i128::from(p.at_ns)) as u64,
        offset_ns: mean(&|p| i128::from(p.offset_ns)) as i64,
        ..best
    }
}

/// An offset as a line over the stream's time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Stream clock minus collector clock at `ref_ns` (stream time).
    pub offset_ns: i64,
    pub ref_ns: u64,
    /// Change of the offset per ns of stream time.
    pub drift: f64,
    /// Half the best recent round trip (plus a relay's uncertainty).
    pub uncertainty_ns: u64,
    pub samples: u64,
}

impl Fit {
    /// The offset at stream time `stream_ns`.
    pub fn offset_at(&self, stream_ns: u64) -> i64 {
        let dt = stream_ns as f64 - self.ref_ns as f64;
        self.offset_ns.saturating_add((self.drift * dt) as i64)
    }

    /// Maps a stream time to collector time.
    pub fn to_collector(&self, stream_ns: u64) -> u64 {
        let offset = self.offset_at(stream_ns);
        (i128::from(stream_ns) - i128::from(offset)).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Maps a collector time to stream time (inverse of `to_collector`).
    pub fn to_stream(&self, collector_ns: u64) -> u64 {
        // offset(s) changes by at most MAX_DRIFT per ns: two steps suffice.
        let mut stream = collector_ns;
        for _ in 0..3 {
            let offset = self.offset_at(stream);
            stream = (i128::from(collector_ns) + i128::from(offset)).clamp(0, i128::from(u64::MAX))
                as u64;
        }
        stream
    }
}

/// Samples of the current group kept (the best by round trip).
const GROUP_SAMPLES: usize = 32;
/// Samples whose uncertainty is within this factor of the group's best
/// are averaged: each one's asymmetry (the part of the round trip the
/// uncertainty bounds) is random, so the mean of a few is closer.
const NEAR_BEST: f64 = 1.5;

/// Estimates a clock's offset from exchange samples.
#[derive(Debug, Default)]
pub struct Estimator {
    /// One summary per group, oldest first; the last is the current group's.
    buckets: VecDeque<Point>,
    /// The current group's best samples.
    group: Vec<Point>,
    samples: u64,
}

impl Estimator {
    /// Adds a sample; returns the new estimate (`None` for a sample that
    /// cannot be right: its reply came before its request, or the
    /// collector's turnaround took as long as the whole exchange — a round
    /// trip of 0, which no real exchange has, and which would claim an
    /// exact offset).
    pub fn add(&mut self, sample: &SyncSample) -> Option<Fit> {
        if sample.pong_received_ns < sample.ping_sent_ns
            || sample.pong_sent_ns < sample.ping_received_ns
            || sample.round_trip_ns() == 0
        {
            return None;
        }
        self.samples += 1;
        let at_ns = sample.stream_midpoint_ns();
        let point = Point {
            bucket: at_ns / BUCKET_NS,
            at_ns,
            offset_ns: sample.offset_ns(),
            uncertainty_ns: sample.uncertainty_ns(),
        };
        if self.group.first().is_some_and(|p| p.bucket != point.bucket) {
            self.group.clear();
        }
        if self.group.is_empty() {
            self.buckets.push_back(point);
            if self.buckets.len() > MAX_BUCKETS {
                self.buckets.pop_front();
            }
        }
        self.group.push(point);
        self.group.sort_by_key(|p| p.uncertainty_ns);
        self.group.truncate(GROUP_SAMPLES);
        if let Some(last) = self.buckets.back_mut() {
            *last = summary(&self.group);
        }
        Some(self.fit())
    }

    /// The estimate from the groups kept (at least one).
    fn fit(&self) -> Fit {
        let recent = self.buckets.iter().rev().take(RECENT_BUCKETS);
        let uncertainty_ns = recent.map(|p| p.uncertainty_ns).min().unwrap_or(0);
        let best = self
            .buckets
            .iter()
            .rev()
            .min_by_key(|p| p.uncertainty_ns)
            .copied()
            .unwrap_or(Point {
                bucket: 0,
                at_ns: 0,
                offset_ns: 0,
                uncertainty_ns: 0,
            });
        let (first, last) = match (self.buckets.front(), self.buckets.back()) {
            (Some(f), Some(l)) => (f.at_ns, l.at_ns),
            _ => (0, 0),
        };
        let mut fit = Fit {
            offset_ns: best.offset_ns,
            ref_ns: best.at_ns,
            drift: 0.0,
            uncertainty_ns,
            samples: self.samples,
        };
        if self.buckets.len() >= 3 && last - first >= MIN_DRIFT_SPAN_NS {
            let (offset_ns, drift) = self.weighted_line(best);
            fit.offset_ns = offset_ns;
            fit.drift = drift;
        }
        fit
    }

    /// Weighted least squares through the groups' best samples (weights
    /// 1/uncertainty²), centred on `best`: (offset at best.at_ns, drift).
    fn weighted_line(&self, best: Point) -> (i64, f64) {
        let mut sums = [0.0f64; 5]; // w, wx, wy, wxx, wxy
        for p in &self.buckets {
            let u = p.uncertainty_ns as f64 + WEIGHT_FLOOR_NS;
            let w = 1.0 / (u * u);
            let x = p.at_ns as f64 - best.at_ns as f64;
            let y = (p.offset_ns - best.offset_ns) as f64;
            sums[0] += w;
            sums[1] += w * x;
            sums[2] += w * y;
            sums[3] += w * x * x;
            sums[4] += w * x * y;
        }
        let [w, wx, wy, wxx, wxy] = sums;
        let denominator = w * wxx - wx * wx;
        if denominator <= 0.0 || !denominator.is_finite() {
            return (best.offset_ns, 0.0);
        }
        let drift = ((w * wxy - wx * wy) / denominator).clamp(-MAX_DRIFT, MAX_DRIFT);
        let intercept = (wy - drift * wx) / w;
        (best.offset_ns.saturating_add(intercept as i64), drift)
    }
}

/// A stream that said it will exchange clocks is held back until `SETTLE`
/// after its first sample (the recorder samples every 100 ms at first, so
/// its first items are placed with the best of several moments' samples,
/// not with a burst a moment of load may have spoiled); at most
/// `HOLD_FOR` in all and `HOLD_ITEMS` items (an event counts as one).
const SETTLE: Duration = Duration::from_millis(500);
const HOLD_FOR: Duration = Duration::from_secs(3);
const HOLD_ITEMS: usize = 250_000;

/// Chunks held at a stream's start.
#[derive(Debug)]
struct Hold {
    since: Instant,
    first_sample: Option<Instant>,
    chunks: Vec<Chunk>,
    /// Items in `chunks` (each event one).
    items: usize,
}

/// A stream's clock as the chain of its hops' estimates: the recorder's
/// connection (hop 0), then each relay's (see `relay`).
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    fits: Vec<Fit>,
}

impl Chain {
    /// Maps a stream time to the collector's clock, hop by hop.
    pub fn to_collector(&self, stream_ns: u64) -> u64 {
        self.fits
            .iter()
            .fold(stream_ns, |t, fit| fit.to_collector(t))
    }

    /// Maps a collector time back to the stream's clock.
    pub fn to_stream(&self, collector_ns: u64) -> u64 {
        self.fits
            .iter()
            .rev()
            .fold(collector_ns, |t, fit| fit.to_stream(t))
    }

    /// The stream's clock minus the collector's at collector time `at_ns`.
    pub fn offset_at(&self, at_ns: u64) -> i64 {
        (i128::from(self.to_stream(at_ns)) - i128::from(at_ns)) as i64
    }

    /// The sum of the hops' uncertainties.
    pub fn uncertainty_ns(&self) -> u64 {
        self.fits.iter().map(|f| f.uncertainty_ns).sum()
    }

    fn drift(&self) -> f64 {
        self.fits.iter().map(|f| f.drift).sum()
    }

    fn samples(&self) -> u64 {
        self.fits.iter().map(|f| f.samples).sum()
    }

    /// True when the chain maps every time to itself (a same-host stream):
    /// then mapping a batch's events would only cost time.
    fn is_identity(&self) -> bool {
        self.fits.iter().all(|f| f.offset_ns == 0 && f.drift == 0.0)
    }

    /// The same chain with no offset and no drift (a same-host stream).
    fn zeroed(&self) -> Chain {
        let fits = self
            .fits
            .iter()
            .map(|f| Fit {
                offset_ns: 0,
                drift: 0.0,
                ..*f
            })
            .collect();
        Chain { fits }
    }
}

/// The clock stage of one stream: estimates its offset from the samples
/// it reports (per hop) and maps its timestamps to the collector's clock.
#[derive(Debug)]
pub struct StreamClock {
    /// One estimator per hop: 1 + the relays the stream came through.
    hops: Vec<Estimator>,
    fits: Vec<Option<Fit>>,
    same_boot: bool,
    chain: Option<Chain>,
    status: ClockStatus,
    announced: Option<ClockOffset>,
    /// Items held at the start (for streams that exchange).
    held: Option<Hold>,
    settle: Duration,
}

impl StreamClock {
    /// The stage for a stream whose hello said `exchanges` (it takes part
    /// in the clock exchange), that reaches the collector over `hops`
    /// connections (1 + its relays), and whose boot id equals the
    /// collector's if `same_boot`.
    pub fn new(exchanges: bool, hops: usize, same_boot: bool) -> StreamClock {
        let hops = hops.max(1);
        StreamClock {
            hops: (0..hops).map(|_| Estimator::default()).collect(),
            fits: vec![None; hops],
            same_boot,
            chain: None,
            status: ClockStatus::Unmeasured,
            announced: None,
            held: exchanges.then(|| Hold {
                since: Instant::now(),
                first_sample: None,
                chunks: Vec::new(),
                items: 0,
            }),
            settle: SETTLE,
        }
    }

    /// This stage, releasing held items `settle` after the first sample.
    pub fn with_settle(mut self, settle: Duration) -> StreamClock {
        self.settle = settle;
        self
    }

    /// The stage for a stream with this hello, on this collector.
    pub fn for_hello(hello: &pb::Hello) -> StreamClock {
        let same_boot = !hello.boot_id.is_empty() && hello.boot_id == local_boot_id();
        let mut stage = StreamClock::new(hello.clock_sync, 1 + hello.relayed_by.len(), same_boot);
        let direct = hello.relayed_by.is_empty() && hello.timens_monotonic_offset_ns == 0;
        if hello.clock_sync && same_boot && direct {
            // This host's CLOCK_MONOTONIC, outside any time namespace: the
            // same clock, known before any sample (a short stream may end
            // before its first), and said so from the start. A recorder
            // that takes no part (`RTRACE_CLOCK_SYNC=0`) is merged as it
            // is and stays "not measured", as README says.
            stage.status = ClockStatus::SameHost;
        }
        stage
    }

    /// The estimate in use, if any.
    pub fn chain(&self) -> Option<&Chain> {
        self.chain.as_ref()
    }

    /// Takes the stream's chunks in order; appends those ready for the
    /// merge (timestamps in the collector's clock, estimates as `Offset`
    /// items) to `out`. `Ping`s must have been answered already; they are
    /// dropped. Chunks come before encoding (`Chunk::Encoded` would pass
    /// unmapped).
    pub fn process(&mut self, chunks: impl IntoIterator<Item = Chunk>, out: &mut Vec<Chunk>) {
        for chunk in chunks {
            match chunk {
                Chunk::Item(StreamItem::Ping { .. }) => {}
                Chunk::Item(StreamItem::Sync(sample)) => self.sample(&sample, out),
                chunk => match &mut self.held {
                    Some(hold) => {
                        hold.items += match &chunk {
                            Chunk::Events { events, .. } => events.len(),
                            Chunk::Plain { plain, .. } => plain.len(),
                            _ => 1,
                        };
                        hold.chunks.push(chunk);
                    }
                    None => self.map(chunk, out),
                },
            }
        }
        if let Some(hold) = &self.held {
            let settled = hold
                .first_sample
                .is_some_and(|t| t.elapsed() >= self.settle);
            if settled || hold.since.elapsed() >= HOLD_FOR || hold.items >= HOLD_ITEMS {
                self.release(out);
            }
        }
    }

    /// The stream ended: releases what is held.
    pub fn finish(&mut self, out: &mut Vec<Chunk>) {
        self.release(out);
    }

    fn sample(&mut self, sample: &SyncSample, out: &mut Vec<Chunk>) {
        let hop = sample.hop as usize;
        let Some(fit) = self.hops.get_mut(hop).and_then(|e| e.add(sample)) else {
            return;
        };
        self.fits[hop] = Some(fit);
        let Some(fits) = self.fits.iter().copied().collect::<Option<Vec<Fit>>>() else {
            return; // a hop without a sample yet
        };
        let chain = Chain { fits };
        let now = rtrace::clock::monotonic_ns();
        let zero = self.same_boot && chain.offset_at(now).unsigned_abs() <= chain.uncertainty_ns();
        self.status = if zero {
            ClockStatus::SameHost
        } else {
            ClockStatus::Measured
        };
        self.chain = Some(if zero { chain.zeroed() } else { chain });
        self.announce(now, out);
        if let Some(hold) = &mut self.held {
            hold.first_sample.get_or_insert_with(Instant::now);
        }
    }

    /// Sends the estimate on (after every sample: the output keeps its
    /// history, the stats its latest value).
    fn announce(&mut self, at_ns: u64, out: &mut Vec<Chunk>) {
        let offset = self.current(at_ns);
        self.announced = Some(offset);
        out.push(Chunk::Item(StreamItem::Offset(offset)));
    }

    /// The estimate as published, at collector time `at_ns`.
    fn current(&self, at_ns: u64) -> ClockOffset {
        let Some(chain) = &self.chain else {
            return ClockOffset {
                status: self.status,
                at_ns,
                ..ClockOffset::default()
            };
        };
        ClockOffset {
            status: self.status,
            offset_ns: chain.offset_at(at_ns),
            uncertainty_ns: chain.uncertainty_ns(),
            drift_ppb: (chain.drift() * 1e9) as i64,
            samples: chain.samples(),
            at_ns,
        }
    }

    fn release(&mut self, out: &mut Vec<Chunk>) {
        let Some(Hold { chunks: held, .. }) = self.held.take() else {
            return;
        };
        if self.announced.is_none() {
            // No sample (yet): say so, so the stats tell.
            let first = held.iter().find_map(|c| match c {
                Chunk::Item(StreamItem::Clock { monotonic_ns, .. }) => Some(*monotonic_ns),
                _ => None,
            });
            self.announce(first.unwrap_or(0), out);
        }
        for chunk in held {
            self.map(chunk, out);
        }
    }

    fn map(&mut self, mut chunk: Chunk, out: &mut Vec<Chunk>) {
        if self.announced.is_none() {
            let at = match &chunk {
                Chunk::Item(StreamItem::Clock { monotonic_ns, .. }) => *monotonic_ns,
                _ => 0,
            };
            self.announce(at, out);
        }
        if let Some(chain) = self.chain.as_ref().filter(|c| !c.is_identity()) {
            match &mut chunk {
                Chunk::Events { events, .. } => {
                    for event in events {
                        event.ts_ns = chain.to_collector(event.ts_ns);
                    }
                }
                Chunk::Plain { plain, .. } => {
                    for ts_ns in plain.ts_ns_mut() {
                        *ts_ns = chain.to_collector(*ts_ns);
                    }
                }
                Chunk::Item(StreamItem::Event(event)) => {
                    event.ts_ns = chain.to_collector(event.ts_ns);
                }
                Chunk::Item(StreamItem::Clock {
                    monotonic_ns,
                    complete_ns,
                }) => {
                    *monotonic_ns = chain.to_collector(*monotonic_ns);
                    // A later estimate may map the stream's next events up
                    // to its uncertainty earlier than this one maps the
                    // promise: keep the promise that much more modest.
                    if let Some(complete) = complete_ns {
                        let mapped = chain.to_collector(*complete);
                        *complete = mapped.saturating_sub(chain.uncertainty_ns());
                    }
                }
                Chunk::Item(StreamItem::ClockJump(jump)) => {
                    jump.at_ns = chain.to_collector(jump.at_ns);
                }
                _ => {}
            }
        }
        out.push(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtrace::{Event, FunctionId, Kind};

    /// A sample of a stream clock `offset` ahead of the collector's, with
    /// one-way delays `up` and `down` (ns), starting at stream time `t1`.
    fn sample(t1: u64, offset: i64, up: u64, down: u64) -> SyncSample {
        let to_collector = |s: u64| (s as i64 - offset) as u64;
        let t2 = to_collector(t1 + up);
        SyncSample {
            ping_sent_ns: t1,
            ping_received_ns: t2,
            pong_sent_ns: t2 + 10,
            pong_received_ns: t1 + up + 10 + down,
            hop: 0,
        }
    }

    #[test]
    fn a_sample_with_no_round_trip_is_refused() {
        let mut e = Estimator::default();
        let s = 1_000_000_000_000;
        let mut inconsistent = sample(s, 37_000_000_000, 20, 20);
        // The collector's turnaround as long as the whole exchange.
        inconsistent.pong_sent_ns = inconsistent.ping_received_ns + 50;
        assert_eq!(inconsistent.round_trip_ns(), 0);
        assert!(e.add(&inconsistent).is_none());
        let fit = e.add(&sample(s + 1000, 37_000_000_000, 20, 20)).unwrap();
        assert_eq!(fit.uncertainty_ns, 20);
    }

    #[test]
    fn the_smallest_round_trip_wins() {
        let mut e = Estimator::default();
        let s = 1_000_000_000_000;
        e.add(&sample(s, 37_000_000_000, 900, 100)).unwrap();
        let fit = e.add(&sample(s + 1000, 37_000_000_000, 20, 20)).unwrap();
        assert_eq!(fit.offset_ns, 37_000_000_000);
        assert_eq!(fit.uncertainty_ns, 20);
        let fit = e.add(&sample(s + 2000, 37_000_000_000, 5000, 10)).unwrap();
        assert_eq!(
            fit.offset_ns, 37_000_000_000,
            "a worse sample changes nothing"
        );
        assert_eq!(fit.samples, 3);
    }

    #[test]
    fn samples_near_the_best_are_averaged() {
        let mut e = Estimator::default();
        let s = 1_000_000_000_000;
        // Round trips of 40 ns, asymmetric either way: each is 10 ns off.
        let first = e.add(&sample(s, 5_000, 30, 10)).unwrap();
        assert_eq!(first.offset_ns.abs_diff(5_000), 10);
        let fit = e.add(&sample(s + 1000, 5_000, 10, 30)).unwrap();
        assert_eq!(fit.offset_ns, 5_000);
        assert_eq!(fit.uncertainty_ns, 20);
    }

    #[test]
    fn drift_is_fitted_over_minutes() {
        let mut e = Estimator::default();
        // 20 ppm drift: the offset grows by 20 us per second.
        let mut fit = None;
        for i in 0..60u64 {
            let t = 5_000_000_000_000 + i * 2_000_000_000;
            let offset = -5_000_000_000 + (i * 2_000_000_000 / 50_000) as i64;
            fit = e.add(&sample(t, offset, 30 + i % 7, 30));
        }
        let fit = fit.unwrap();
        assert!((fit.drift - 20e-6).abs() < 0.2e-6, "{}", fit.drift);
        let t = 5_000_000_000_000 + 59 * 2_000_000_000;
        let expected = -5_000_000_000 + (59 * 2_000_000_000 / 50_000);
        assert!((fit.offset_at(t) - expected).abs() < 100, "{fit:?}");
    }

    /// A same-host stream's chain is skipped when mapping: it must be
    /// exactly the identity.
    #[test]
    fn a_zeroed_chain_is_the_identity() {
        let fit = Fit {
            offset_ns: 37_000,
            ref_ns: 100,
            drift: 20e-6,
            uncertainty_ns: 10,
            samples: 1,
        };
        let chain = Chain { fits: vec![fit; 2] };
        assert!(!chain.is_identity());
        let zeroed = chain.zeroed();
        assert!(zeroed.is_identity());
        for t in [0, 1, 1 << 40, u64::MAX] {
            assert_eq!(zeroed.to_collector(t), t);
        }
    }

    #[test]
    fn mapping_is_inverted_by_to_stream() {
        let fit = Fit {
            offset_ns: 37_000_000_000,
            ref_ns: 100_000_000_000,
            drift: 20e-6,
            uncertainty_ns: 10,
            samples: 1,
        };
        let stream = 150_000_000_000;
        let collector = fit.to_collector(stream);
        assert!(fit.to_stream(collector).abs_diff(stream) <= 1);
    }

    fn event(ts_ns: u64) -> Chunk {
        Chunk::Item(StreamItem::Event(Event {
            ts_ns,
            tid: 1,
            kind: Kind::Call,
            function: FunctionId(0),
            line: 0,
            mark: None,
            text: None,
        }))
    }

    fn item(item: StreamItem) -> Chunk {
        Chunk::Item(item)
    }

    #[test]
    fn items_wait_for_the_first_sample_then_move_by_the_offset() {
        let mut clock = StreamClock::new(true, 1, false).with_settle(Duration::ZERO);
        let mut out = Vec::new();
        let base = 40_000_000_000;
        clock.process(
            [
                item(StreamItem::Clock {
                    monotonic_ns: base,
                    complete_ns: Some(base - 1_000),
                }),
                event(base + 5),
            ],
            &mut out,
        );
        assert!(out.is_empty(), "held until the first sample");
        let sync = item(StreamItem::Sync(sample(base + 10, 37_000_000_000, 20, 20)));
        let mut plain = rtrace::Plain::default();
        plain.push(base + 200, FunctionId(1), Kind::Call);
        plain.push(base + 300, FunctionId(1), Kind::Return);
        let plain = Chunk::Plain { tid: 1, plain };
        clock.process([sync, event(base + 100), plain], &mut out);
        let Chunk::Item(StreamItem::Offset(offset)) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(offset.status, ClockStatus::Measured);
        assert_eq!(offset.offset_ns, 37_000_000_000);
        let times: Vec<u64> = out[1..]
            .iter()
            .flat_map(|i| match i {
                Chunk::Item(StreamItem::Clock { monotonic_ns, .. }) => vec![*monotonic_ns],
                Chunk::Item(StreamItem::Event(e)) => vec![e.ts_ns],
                Chunk::Plain { plain, .. } => plain.ts_ns().to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        let expected = [0, 5, 100, 200, 300].map(|t| 3_000_000_000 + t);
        assert_eq!(times, expected);
        // The promise moves with the events, less the estimate's
        // uncertainty: a later estimate must not make it a lie.
        let Chunk::Item(StreamItem::Clock { complete_ns, .. }) = out[1] else {
            panic!("{out:?}")
        };
        assert!(offset.uncertainty_ns > 0);
        assert_eq!(
            complete_ns,
            Some(3_000_000_000 - 1_000 - offset.uncertainty_ns)
        );
    }

    /// A stream of this host's clock, outside a time namespace, is the
    /// same host from its first item, even if it ends before any sample.
    #[test]
    fn this_hosts_clock_is_the_same_host_before_any_sample() {
        let hello = |timens_ns: i64| pb::Hello {
            boot_id: local_boot_id().to_owned(),
            clock_sync: true,
            timens_monotonic_offset_ns: timens_ns,
            ..pb::Hello::default()
        };
        for (timens_ns, status) in [(0, ClockStatus::SameHost), (37, ClockStatus::Unmeasured)] {
            let mut clock = StreamClock::for_hello(&hello(timens_ns));
            let mut out = Vec::new();
            let snapshot = StreamItem::Clock {
                monotonic_ns: 5,
                complete_ns: None,
            };
            clock.process([item(snapshot)], &mut out);
            clock.finish(&mut out);
            let Chunk::Item(StreamItem::Offset(offset)) = out[0] else {
                panic!("{out:?}")
            };
            assert_eq!(
                (offset.status, offset.offset_ns),
                (status, 0),
                "timens {timens_ns}"
            );
        }
    }

    /// `RTRACE_CLOCK_SYNC=0`: merged as it is, and said to be so, even
    /// on the collector's own host.
    #[test]
    fn a_stream_without_the_exchange_is_not_measured_even_on_this_host() {
        let hello = pb::Hello {
            boot_id: local_boot_id().to_owned(),
            clock_sync: false,
            ..pb::Hello::default()
        };
        let mut clock = StreamClock::for_hello(&hello);
        let mut out = Vec::new();
        clock.process([event(7)], &mut out);
        clock.finish(&mut out);
        let Chunk::Item(StreamItem::Offset(offset)) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(offset.status, ClockStatus::Unmeasured);
        assert_eq!(out[1], event(7));
    }

    #[test]
    fn same_boot_within_uncertainty_is_exactly_zero() {
        let mut clock = StreamClock::new(true, 1, true);
        let mut out = Vec::new();
        clock.process(
            [item(StreamItem::Sync(sample(1_000_000, 3, 20, 20)))],
            &mut out,
        );
        let Chunk::Item(StreamItem::Offset(offset)) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (offset.status, offset.offset_ns),
            (ClockStatus::SameHost, 0)
        );
        // A time namespace shares the boot id but not the clock.
        let mut clock = StreamClock::new(true, 1, true);
        out.clear();
        clock.process(
            [item(StreamItem::Sync(sample(
                9_000_000_000,
                -5_000_000_000,
                20,
                20,
            )))],
            &mut out,
        );
        let Chunk::Item(StreamItem::Offset(offset)) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (offset.status, offset.offset_ns),
            (ClockStatus::Measured, -5_000_000_000)
        );
    }

    #[test]
    fn streams_without_exchange_pass_unchanged_and_say_so() {
        let mut clock = StreamClock::new(false, 1, false);
        let mut out = Vec::new();
        clock.process([event(7)], &mut out);
        assert!(matches!(
            out[0],
            Chunk::Item(StreamItem::Offset(ClockOffset {
                status: ClockStatus::Unmeasured,
                ..
            }))
        ));
        assert_eq!(out[1], event(7));
    }
}
