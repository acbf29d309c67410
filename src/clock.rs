//! Time: raw counter reads on the hot path, snapshots that pair the counter
//! with the system clocks, and the conversion of ticks to nanoseconds.
//!
//! The hot path stores raw `quanta` ticks (the TSC where it is stable). The
//! writer records `Snapshot`s often; readers convert ticks to
//! CLOCK_MONOTONIC nanoseconds by interpolating between snapshots, so the
//! conversion never drifts the way a single start-up calibration does.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

/// How `ticks()` reads the counter, decided on its first call.
static READ: AtomicU8 = AtomicU8::new(READ_UNDECIDED);
const READ_UNDECIDED: u8 = 0;
/// quanta chose the TSC: read it with one instruction.
const READ_TSC: u8 = 1;
/// Through quanta (its CLOCK_MONOTONIC fallback, or a counter of another
/// architecture).
const READ_QUANTA: u8 = 2;

fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Reads the raw counter. Cheap: no syscall where the TSC is usable, and
/// then just the `rdtsc` that quanta itself would run, without its
/// dispatch (this is on the hook's path twice per call).
#[inline]
pub fn ticks() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if READ.load(Ordering::Relaxed) == READ_TSC {
        // SAFETY: `rdtsc` has no preconditions; READ_TSC means quanta's
        // clock reads this same instruction (see `decide_read`).
        #[allow(unsafe_code)]
        return unsafe { core::arch::x86_64::_rdtsc() };
    }
    ticks_through_quanta()
}

/// `ticks()` where it is a single `rdtsc`, `None` elsewhere (and before
/// the first `ticks()` has decided). For a hot path that must make no
/// call: it leaves the other case to a general path that calls `ticks()`.
#[inline(always)]
pub fn tsc_ticks() -> Option<u64> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if READ.load(Ordering::Relaxed) == READ_TSC {
        // SAFETY: as in `ticks`.
        #[allow(unsafe_code)]
        return Some(unsafe { core::arch::x86_64::_rdtsc() });
    }
    None
}

#[cold]
fn ticks_through_quanta() -> u64 {
    if READ.load(Ordering::Relaxed) == READ_UNDECIDED {
        let read = decide_read();
        READ.store(read, Ordering::Relaxed);
        if read == READ_TSC {
            return tsc_ticks().unwrap_or_else(|| clock().raw());
        }
    }
    clock().raw()
}

/// READ_TSC where quanta's clock reads the TSC: quanta's own test (an
/// invariant TSC and RDTSCP, from CPUID), asked without building quanta's
/// clock, whose calibration spins for milliseconds (see `describe`).
fn decide_read() -> u8 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if tsc_is_quantas_counter() {
        return READ_TSC;
    }
    READ_QUANTA
}

/// quanta's `has_counter_support` on x86-64: CPUID leaf 0x8000_0007
/// (EDX bit 8, invariant TSC) and 0x8000_0001 (EDX bit 27, RDTSCP).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn tsc_is_quantas_counter() -> bool {
    use core::arch::x86_64::__cpuid;
    // SAFETY: CPUID exists on every x86-64 CPU and only reads; no leaf
    // above the highest extended one (leaf 0x8000_0000's EAX) is asked.
    #[allow(unsafe_code, unused_unsafe)]
    let cpuid = |leaf: u32| unsafe { __cpuid(leaf) };
    if cpuid(0x8000_0000).eax < 0x8000_0007 {
        return false;
    }
    let rdtscp = cpuid(0x8000_0001).edx & (1 << 27) != 0;
    let invariant = cpuid(0x8000_0007).edx & (1 << 8) != 0;
    rdtscp && invariant
}

/// Which counter `ticks()` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The CPU time-stamp counter.
    Tsc,
    /// CLOCK_MONOTONIC nanoseconds (quanta's fallback).
    Monotonic,
}

/// The counter in use and its nominal rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Description {
    pub source: Source,
    pub ticks_per_second: f64,
}

/// Describes the counter. Its rate is only used to extrapolate past the
/// last snapshot and to judge how far two snapshots disagree (see
/// `ClockMap`): where `ticks()` reads the TSC it is measured here, once per
/// process, in `RATE_SPAN_NS` against CLOCK_MONOTONIC, not
/// taken from quanta's calibration, which spins for milliseconds: most of a
/// process's first `start()`. Elsewhere quanta describes its clock.
pub fn describe() -> Description {
    ticks();
    if READ.load(Ordering::Relaxed) == READ_TSC {
        return Description {
            source: Source::Tsc,
            ticks_per_second: tsc_rate(),
        };
    }
    let ticks_per_second = quanta_rate();
    let a = ticks();
    let mono = monotonic_ns();
    let looks_like_ns = (ticks_per_second - 1e9).abs() < 1e3 && a.abs_diff(mono) < 1_000_000;
    let source = if looks_like_ns {
        Source::Monotonic
    } else {
        Source::Tsc
    };
    Description {
        source,
        ticks_per_second,
    }
}

/// The rate quanta's calibration gives its clock.
fn quanta_rate() -> f64 {
    let span = 1u64 << 32;
    let nanos = clock().delta_as_nanos(0, span).max(1);
    span as f64 * 1e9 / nanos as f64
}

/// The TSC's rate, measured once per process (see `describe`).
fn tsc_rate() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| {
        let first = precise_snapshot();
        while monotonic_ns() < first.monotonic_ns + RATE_SPAN_NS {
            std::hint::spin_loop();
        }
        let last = precise_snapshot();
        let ns = last.monotonic_ns.saturating_sub(first.monotonic_ns).max(1);
        last.ticks.saturating_sub(first.ticks) as f64 * 1e9 / ns as f64
    })
}

/// How long `tsc_rate` measures. Each of its snapshots is the narrowest
/// bracket of 8 (a preempted read widens its bracket, and is not kept),
/// ~10–50 ns wide: the rate is good to 1e-4–1e-3, far inside the 1 % by
/// which snapshots must disagree to count as a clock jump.
const RATE_SPAN_NS: u64 = 100_000;

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME (Unix epoch) in nanoseconds.
pub fn unix_ns() -> u64 {
    read_clock(libc::CLOCK_REALTIME)
}

fn read_clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(id, &mut ts)
    };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The raw counter paired with the system clocks at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub ticks: u64,
    pub monotonic_ns: u64,
    pub unix_ns: u64,
}

/// Attempts at most per snapshot, and the bracket (in ns at the nominal
/// rate) that is good enough to stop early: a `clock_gettime` takes
/// 20–60 ns, so a bracket of a few hundred ns means nothing preempted the
/// reads.
const SNAPSHOT_ATTEMPTS: usize = 8;
const GOOD_BRACKET_NS: f64 = 250.0;

/// Takes a snapshot: the CLOCK_MONOTONIC read bracketed by two counter
/// reads, repeated (up to 8 times) until the bracket is narrow; the
/// narrowest wins. Its midpoint pairs the counter with the clock, so the
/// pairing error stays near half the cost of one `clock_gettime` even on a
/// busy machine, where a read may be preempted.
pub fn snapshot() -> Snapshot {
    let good_ticks = (GOOD_BRACKET_NS * describe_rate() / 1e9) as u64;
    narrowest(good_ticks, bracketed_snapshot)
}

/// A snapshot from the narrowest bracket of 8, none taken as good enough
/// to stop early (which needs the rate): for measuring the rate.
fn precise_snapshot() -> Snapshot {
    narrowest(0, bracketed_snapshot)
}

/// CLOCK_MONOTONIC and CLOCK_REALTIME at one moment, in ns: the realtime
/// read bracketed by two monotonic reads and paired with their midpoint,
/// the narrowest of a few tries, as `snapshot` does. Two bare reads one
/// after the other are paired wrong by as long as the thread was off the
/// CPU between them: by more than 20 µs in about 2 of 100,000 pairs on an
/// idle 2-core VM (`benches/clock_pairs.c`), more often on a busy one.
pub fn monotonic_and_unix_ns() -> (u64, u64) {
    paired(monotonic_ns, unix_ns)
}

fn paired(mut monotonic: impl FnMut() -> u64, mut unix: impl FnMut() -> u64) -> (u64, u64) {
    narrowest(GOOD_BRACKET_NS as u64, || {
        let before = monotonic();
        let unix_ns = unix();
        let after = monotonic();
        let width = after.saturating_sub(before);
        (width, (before + width / 2, unix_ns))
    })
}

/// Runs `attempt` (bracketed clock reads: the bracket's width, and what
/// they give) until a bracket is at most `good` wide, at most
/// `SNAPSHOT_ATTEMPTS` times; the narrowest wins.
fn narrowest<T>(good: u64, mut attempt: impl FnMut() -> (u64, T)) -> T {
    let (mut best_width, mut best) = attempt();
    for _ in 1..SNAPSHOT_ATTEMPTS {
        if best_width <= good {
            break;
        }
        let (width, result) = attempt();
        if width < best_width {
            (best_width, best) = (width, result);
        }
    }
    best
}

/// The counter's nominal rate (ticks per second), computed once.
fn describe_rate() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| describe().ticks_per_second)
}

fn bracketed_snapshot() -> (u64, Snapshot) {
    let before = ticks();
    let monotonic_ns = monotonic_ns();
    let after = ticks();
    let unix_ns = unix_ns();
    let width = after.saturating_sub(before);
    let snap = Snapshot {
        ticks: before + width / 2,
        monotonic_ns,
        unix_ns,
    };
    (width, snap)
}

/// Converts a duration to ticks at the nominal rate.
pub fn duration_to_ticks(duration: Duration, description: &Description) -> u64 {
    (duration.as_secs_f64() * description.ticks_per_second) as u64
}

/// How a stream's clock jumped (see `ClockMap::add`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JumpKind {
    /// The raw counter went backwards between two snapshots (or between
    /// two events of one thread): it was reset or is not synchronised
    /// across CPUs.
    CounterBackwards,
    /// CLOCK_MONOTONIC went backwards between two snapshots: the stream
    /// moved to another clock (a restored checkpoint, another host).
    MonotonicBackwards,
    /// Counter and CLOCK_MONOTONIC advanced by amounts more than 1 % (and
    /// 1 ms) apart: an unstable counter, or a suspend one clock skipped.
    CounterDisagrees,
}

impl JumpKind {
    /// A short name for stats and the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            JumpKind::CounterBackwards => "counter went backwards",
            JumpKind::MonotonicBackwards => "CLOCK_MONOTONIC went backwards",
            JumpKind::CounterDisagrees => "counter and CLOCK_MONOTONIC disagree",
        }
    }
}

/// A clock jump seen in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockJump {
    pub kind: JumpKind,
    /// Where it happened, in the stream's time (as its events are stamped).
    pub at_ns: u64,
    /// How far the clock moved against what the other clock (or the
    /// thread's previous event) says: negative for a backward jump.
    pub size_ns: i64,
}

/// A snapshot behind the previous one in both clocks, by the same amount
/// and by less than this, is an older one written late, not a jump.
const STALE_NS: i128 = 1_000_000_000;

/// Snapshots this far apart in both clocks, or 1 % of the span, disagree.
const DISAGREE_NS: f64 = 1e6;
const DISAGREE_FRACTION: f64 = 0.01;

/// Converts ticks of one stream to CLOCK_MONOTONIC nanoseconds.
///
/// Piecewise linear through the snapshots seen so far; before the first and
/// after the last it extends the nearest segment (or the nominal rate when
/// there is only one snapshot). Monotonic: more ticks never give fewer ns.
///
/// A snapshot that breaks the pattern is a clock jump, reported by `add`
/// and handled so that the stream's time keeps going forward: after the
/// counter went backwards, conversion restarts from that snapshot; after
/// CLOCK_MONOTONIC went backwards, the stream's later times are shifted
/// forward by the jump (so they continue where the counter says), which
/// `shift_ns` tells.
#[derive(Debug, Clone)]
pub struct ClockMap {
    points: Vec<(u64, u64)>,
    ticks_per_second: f64,
    shift_ns: u64,
    /// Snapshots ignored because they repeat the previous one, or are an
    /// older one written late.
    pub rejected: u64,
}

impl ClockMap {
    /// An empty map; `ticks_per_second` is the stream's nominal rate.
    pub fn new(ticks_per_second: f64) -> ClockMap {
        let rate = if ticks_per_second.is_finite() && ticks_per_second > 0.0 {
            ticks_per_second
        } else {
            1e9
        };
        ClockMap {
            points: Vec::new(),
            ticks_per_second: rate,
            shift_ns: 0,
            rejected: 0,
        }
    }

    /// Adds a snapshot; returns the jump it reveals, if any.
    pub fn add(&mut self, ticks: u64, monotonic_ns: u64) -> Option<ClockJump> {
        let ns = monotonic_ns.saturating_add(self.shift_ns);
        let Some(&(t0, ns0)) = self.points.last() else {
            self.points.push((ticks, ns));
            return None;
        };
        let dt_ticks = i128::from(ticks) - i128::from(t0);
        let dt_ns = i128::from(ns) - i128::from(ns0);
        let expected_ns = dt_ticks.max(0) as f64 * 1e9 / self.ticks_per_second;
        let stale = dt_ticks <= 0
            && dt_ns <= 0
            && -dt_ns < STALE_NS
            && (dt_ns as f64 - self.ticks_to_ns(dt_ticks as i64) as f64).abs() < DISAGREE_NS;
        if stale {
            // An older snapshot written after a newer one (a connection
            // starts with a fresh snapshot, then the writer's own from
            // before it): nothing jumped. It still brackets the events
            // between the two, which would otherwise be converted by
            // stretching a later segment backwards; kept where it belongs
            // when it lies strictly between its neighbours.
            let at = self.points.partition_point(|&(t, _)| t < ticks);
            let after_previous = at == 0 || {
                let (t, n) = self.points[at - 1];
                t < ticks && n < ns
            };
            let before_next = self
                .points
                .get(at)
                .is_some_and(|&(t, n)| t > ticks && n > ns);
            if after_previous && before_next {
                self.points.insert(at, (ticks, ns));
            } else {
                self.rejected += 1;
            }
            return None;
        }
        if dt_ns < 0 {
            // Continue where the counter says the stream is.
            let at_ns = ns0.saturating_add(expected_ns as u64);
            self.shift_ns = self.shift_ns.saturating_add(at_ns - ns);
            if dt_ticks <= 0 {
                self.points.clear();
            }
            self.points.push((ticks, at_ns));
            let size_ns = (dt_ns as f64 - expected_ns) as i64;
            return Some(self.jump(JumpKind::MonotonicBackwards, at_ns, size_ns));
        }
        if dt_ticks <= 0 {
            self.points.clear();
            self.points.push((ticks, ns));
            let size_ns = (dt_ticks as f64 * 1e9 / self.ticks_per_second) as i64;
            return Some(self.jump(JumpKind::CounterBackwards, ns, size_ns));
        }
        self.points.push((ticks, ns));
        let deviation = dt_ns as f64 - expected_ns;
        let tolerance = DISAGREE_NS.max(DISAGREE_FRACTION * expected_ns);
        (deviation.abs() > tolerance)
            .then(|| self.jump(JumpKind::CounterDisagrees, ns, deviation as i64))
    }

    fn jump(&self, kind: JumpKind, at_ns: u64, size_ns: i64) -> ClockJump {
        ClockJump {
            kind,
            at_ns,
            size_ns,
        }
    }

    /// What is added to the stream's CLOCK_MONOTONIC readings after
    /// backward jumps of it (0 for a healthy stream).
    pub fn shift_ns(&self) -> u64 {
        self.shift_ns
    }

    /// True when no snapshot has been added.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Converts `ticks` to nanoseconds, or `None` before any snapshot.
    pub fn to_ns(&self, ticks: u64) -> Option<u64> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(self.extrapolate(self.points[0], ticks));
        }
        let i = self.points.partition_point(|&(t, _)| t <= ticks);
        let (a, b) = match i {
            0 => (self.points[0], self.points[1]),
            i if i >= n => (self.points[n - 2], self.points[n - 1]),
            i => (self.points[i - 1], self.points[i]),
        };
        Some(interpolate(a, b, ticks))
    }

    /// Ticks as nanoseconds at the nominal rate (for tick differences).
    pub fn ticks_to_ns(&self, ticks: i64) -> i64 {
        (ticks as f64 * 1e9 / self.ticks_per_second) as i64
    }

    /// A converter for many ticks in a row: it keeps the segment of the
    /// last conversion, as a batch's events mostly fall in one segment.
    /// Gives exactly what `to_ns` gives.
    pub fn converter(&self) -> Converter<'_> {
        Converter {
            map: self,
            fast: Fast::EMPTY,
        }
    }

    /// The segment that `to_ns` uses for `ticks` (at least two points).
    fn segment(&self, ticks: u64) -> Segment {
        let n = self.points.len();
        let i = self.points.partition_point(|&(t, _)| t <= ticks);
        let (lo, hi, a, b) = match i {
            0 => (0, self.points[0].0 - 1, self.points[0], self.points[1]),
            i if i >= n => (
                self.points[n - 1].0,
                u64::MAX,
                self.points[n - 2],
                self.points[n - 1],
            ),
            i => (
                self.points[i - 1].0,
                self.points[i].0 - 1,
                self.points[i - 1],
                self.points[i],
            ),
        };
        Segment::new(lo, hi, a, b)
    }

    fn extrapolate(&self, (t0, ns0): (u64, u64), ticks: u64) -> u64 {
        let dt = ticks as f64 - t0 as f64;
        let ns = ns0 as f64 + dt * 1e9 / self.ticks_per_second;
        ns.max(0.0) as u64
    }
}

/// Converts ticks with the segment of the previous conversion, if it holds
/// them (see `ClockMap::converter`).
pub struct Converter<'a> {
    map: &'a ClockMap,
    /// The ticks and rate of that segment's common case (see `Fast`).
    fast: Fast,
}

impl Converter<'_> {
    /// What `ClockMap::to_ns` gives for `ticks`.
    #[inline]
    pub fn to_ns(&mut self, ticks: u64) -> Option<u64> {
        if self.fast.lo <= ticks && ticks <= self.fast.hi {
            return Some(self.fast.convert(ticks));
        }
        self.convert_in_another_segment(ticks)
    }

    /// Out of line: a batch crosses a snapshot rarely, and keeping this
    /// out of `to_ns` lets the common case be inlined into the decoder.
    #[inline(never)]
    fn convert_in_another_segment(&mut self, ticks: u64) -> Option<u64> {
        if self.map.points.len() < 2 {
            return self.map.to_ns(ticks);
        }
        let segment = self.map.segment(ticks);
        self.fast = Fast::of(&segment);
        Some(segment.convert(ticks))
    }
}

/// The part of a segment where `Segment::convert` takes its common case
/// (ticks at or after its first point, time going forward, no overflow),
/// with what that case needs, so that a conversion there tests one range.
#[derive(Debug, Clone, Copy)]
struct Fast {
    lo: u64,
    hi: u64,
    a: (u64, u64),
    rate: Rate,
}

impl Fast {
    /// No ticks at all (`lo > hi`).
    const EMPTY: Fast = Fast {
        lo: 1,
        hi: 0,
        a: (0, 0),
        rate: Rate {
            whole: 0,
            fraction: 0,
            remainder: 0,
            span_t: 1,
        },
    };

    fn of(segment: &Segment) -> Fast {
        let Some(rate) = segment.rate else {
            return Fast::EMPTY;
        };
        let t0 = segment.a.0;
        // Where `dt * whole` stops fitting in a u64.
        let last = match rate.whole {
            0 => u64::MAX,
            whole => t0.saturating_add(u64::MAX / whole),
        };
        Fast {
            lo: segment.lo.max(t0),
            hi: segment.hi.min(last),
            a: segment.a,
            rate,
        }
    }

    /// `Segment::convert`'s common case, for ticks in `lo..=hi`.
    #[inline]
    fn convert(&self, ticks: u64) -> u64 {
        let (t0, ns0) = self.a;
        let dt = ticks - t0;
        rate_convert(ns0, dt, dt * self.rate.whole, &self.rate)
    }
}

/// The line between two snapshots, and the ticks it converts.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Ticks from `lo` to `hi` (inclusive) use this segment.
    lo: u64,
    hi: u64,
    a: (u64, u64),
    b: (u64, u64),
    /// Nanoseconds per tick, when time goes forward over the segment.
    rate: Option<Rate>,
}

/// `span_ns / span_t` as a whole part, a 64-bit binary fraction (rounded
/// down), and the remainder that checks the fraction's products.
#[derive(Debug, Clone, Copy)]
struct Rate {
    whole: u64,
    fraction: u64,
    remainder: u64,
    span_t: u64,
}

impl Segment {
    fn new(lo: u64, hi: u64, a: (u64, u64), b: (u64, u64)) -> Segment {
        let rate = (b.1 >= a.1 && b.0 > a.0).then(|| {
            let (span_ns, span_t) = (b.1 - a.1, b.0 - a.0);
            let remainder = span_ns % span_t;
            let fraction = (u128::from(remainder) << 64) / u128::from(span_t);
            Rate {
                whole: span_ns / span_t,
                fraction: fraction as u64,
                remainder,
                span_t,
            }
        });
        Segment { lo, hi, a, b, rate }
    }

    /// `interpolate(a, b, ticks)` without its 128-bit division in the
    /// common case (ticks at or after `a`, time going forward): the
    /// quotient from the fixed-point rate is at most one short, which an
    /// exact product checks.
    #[inline]
    fn convert(&self, ticks: u64) -> u64 {
        let (t0, ns0) = self.a;
        let Some(rate) = self.rate.filter(|_| ticks >= t0) else {
            return interpolate_cold(self.a, self.b, ticks);
        };
        let dt = ticks - t0;
        let Some(base) = dt.checked_mul(rate.whole) else {
            return interpolate_cold(self.a, self.b, ticks);
        };
        rate_convert(ns0, dt, base, &rate)
    }
}

/// `ns0 + base + dt * remainder / span_t` (rounded down), where `base` is
/// `dt * whole`: the quotient from the fixed-point fraction is at most one
/// short, which an exact product checks.
///
/// The check is needed only where the quotient can be short. The fraction
/// is short of `2^64 * remainder / span_t` by less than one, so the
/// product `dt * fraction` is short of `2^64 * dt * remainder / span_t` by
/// less than `dt`: the quotient (the product's high half) can miss the
/// next integer only if its low half is within `dt` of `2^64`. That is
/// one chance in `2^64 / dt` (`dt` is below `2^40` for snapshots a few
/// seconds apart): almost every event skips two 128-bit products.
#[inline]
fn rate_convert(ns0: u64, dt: u64, base: u64, rate: &Rate) -> u64 {
    let product = u128::from(dt) * u128::from(rate.fraction);
    let mut part = (product >> 64) as u64;
    let may_be_short = (product as u64).overflowing_add(dt).1;
    if may_be_short
        && (u128::from(part) + 1) * u128::from(rate.span_t)
            <= u128::from(dt) * u128::from(rate.remainder)
    {
        part += 1;
    }
    ns0.saturating_add(base).saturating_add(part)
}

/// `interpolate` where it is the rare case (ticks before the segment's
/// start, time going back, or a product too large).
#[cold]
#[inline(never)]
fn interpolate_cold(a: (u64, u64), b: (u64, u64), ticks: u64) -> u64 {
    interpolate(a, b, ticks)
}

fn interpolate((t0, ns0): (u64, u64), (t1, ns1): (u64, u64), ticks: u64) -> u64 {
    let dt = i128::from(ticks) - i128::from(t0);
    let span_t = i128::from(t1) - i128::from(t0);
    let span_ns = i128::from(ns1) - i128::from(ns0);
    // Both factors can be near ±2^64 in a hostile stream, whose product
    // overflows even i128: then in floating point (the value is clamped
    // anyway; real snapshots are never that far apart).
    let scaled = match dt.checked_mul(span_ns) {
        Some(product) => product / span_t,
        None => (dt as f64 * span_ns as f64 / span_t as f64) as i128,
    };
    let ns = i128::from(ns0).saturating_add(scaled);
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_the_counter_quanta_reads() {
        ticks();
        assert_ne!(READ.load(Ordering::Relaxed), READ_UNDECIDED);
        for _ in 0..1000 {
            let before = clock().raw();
            let t = ticks();
            let after = clock().raw();
            assert!(before <= t && t <= after, "{before} {t} {after}");
        }
        if describe().source == Source::Tsc {
            assert_eq!(READ.load(Ordering::Relaxed), READ_TSC);
        }
    }

    /// The rate measured without quanta's calibration agrees with it.
    #[test]
    fn the_measured_rate_agrees_with_quantas_calibration() {
        let description = describe();
        let quanta = quanta_rate();
        let off = (description.ticks_per_second / quanta - 1.0).abs();
        assert!(off < 2e-3, "{description:?} against quanta's {quanta}");
    }

    /// A thread kept off the CPU between its two clock reads pairs them
    /// apart by as long as it waited: the pair is taken again. (A kernel
    /// receive time converted with such a pair came out that much early,
    /// which made its clock exchange's round trip look shorter, and the
    /// estimate chose it.)
    #[test]
    fn a_pair_of_clocks_read_across_a_preemption_is_taken_again() {
        use std::cell::Cell;
        const REALTIME_AHEAD: u64 = 1_000_000_000_000;
        let now = Cell::new(5_000_000u64);
        let tick = |waited: u64| {
            now.set(now.get() + 30 + waited);
            now.get()
        };
        let realtime_reads = Cell::new(0u32);
        let monotonic = || tick(0);
        let unix = || {
            realtime_reads.set(realtime_reads.get() + 1);
            // The first realtime read comes after 40 µs off the CPU.
            let waited = if realtime_reads.get() == 1 { 40_000 } else { 0 };
            tick(waited) + REALTIME_AHEAD
        };
        let (monotonic_ns, unix_ns) = paired(monotonic, unix);
        let error = (unix_ns - REALTIME_AHEAD).abs_diff(monotonic_ns);
        assert!(error <= 30, "paired {error} ns apart");
        assert_eq!(realtime_reads.get(), 2, "taken again once");
        // The real clocks pair up within a few µs.
        let (monotonic_ns, unix_ns) = monotonic_and_unix_ns();
        let (after_monotonic, after_unix) = (super::monotonic_ns(), super::unix_ns());
        assert!(monotonic_ns <= after_monotonic && unix_ns <= after_unix);
    }

    #[test]
    fn snapshots_at_the_ends_of_the_range_do_not_overflow() {
        // Found by the frame decoder's fuzz target: a counter and a clock
        // that span the whole of u64.
        assert_eq!(interpolate((0, u64::MAX), (1, 0), u64::MAX), 0);
        assert_eq!(interpolate((0, 0), (1, u64::MAX), u64::MAX), u64::MAX);
        assert_eq!(
            interpolate((u64::MAX, 0), (u64::MAX - 1, u64::MAX), 0),
            u64::MAX
        );
        assert_eq!(interpolate((1000, 500), (3000, 1500), 2000), 1000);
    }

    #[test]
    fn interpolates_between_and_extends_beyond_snapshots() {
        let mut map = ClockMap::new(2e9);
        map.add(1000, 500);
        map.add(3000, 1500);
        map.add(5000, 2500);
        assert_eq!(map.to_ns(1000), Some(500));
        assert_eq!(map.to_ns(2000), Some(1000));
        assert_eq!(map.to_ns(4000), Some(2000));
        assert_eq!(map.to_ns(7000), Some(3500));
        assert_eq!(map.to_ns(0), Some(0));
    }

    #[test]
    fn a_counter_going_backwards_is_a_jump_and_conversion_restarts() {
        let mut map = ClockMap::new(1e9);
        assert_eq!(map.add(1000, 1000), None);
        let jump = map.add(900, 2000).unwrap();
        assert_eq!(jump.kind, JumpKind::CounterBackwards);
        assert_eq!((jump.at_ns, jump.size_ns), (2000, -100));
        assert_eq!(map.add(1900, 3000), None);
        assert_eq!(map.to_ns(1400), Some(2500));
        let mut last = 0;
        for t in (900..5000).step_by(7) {
            let ns = map.to_ns(t).unwrap();
            assert!(ns >= last);
            last = ns;
        }
    }

    #[test]
    fn monotonic_going_backwards_shifts_later_times_forward() {
        let mut map = ClockMap::new(1e9);
        map.add(1_000_000, 5_000_000_000);
        // 1 ms of ticks later, CLOCK_MONOTONIC reads 3 s earlier.
        let jump = map.add(2_000_000, 2_001_000_000).unwrap();
        assert_eq!(jump.kind, JumpKind::MonotonicBackwards);
        assert_eq!((jump.at_ns, jump.size_ns), (5_001_000_000, -3_000_000_000));
        assert_eq!(map.shift_ns(), 3_000_000_000);
        assert_eq!(map.add(3_000_000, 2_002_000_000), None);
        assert_eq!(map.to_ns(2_500_000), Some(5_001_500_000));
        assert_eq!(map.to_ns(3_000_000), Some(5_002_000_000));
    }

    #[test]
    fn counter_and_clock_disagreeing_is_a_jump_but_interpolation_goes_on() {
        let mut map = ClockMap::new(1e9);
        map.add(0, 0);
        assert_eq!(map.add(100_000_000, 100_500_000), None, "0.5 % off: fine");
        let jump = map.add(200_000_000, 300_500_000).unwrap();
        assert_eq!(jump.kind, JumpKind::CounterDisagrees);
        assert_eq!(jump.size_ns, 100_000_000);
        assert_eq!(map.to_ns(150_000_000), Some(200_500_000));
        assert_eq!(map.add(200_000_000, 300_500_000), None, "a repeat");
        assert_eq!(map.add(199_000_000, 299_500_000), None, "an older one");
        assert_eq!(map.rejected, 1, "the repeat; the older one is kept");
        assert_eq!(map.to_ns(199_500_000), Some(300_000_000));
    }

    /// A connection starts with a fresh snapshot, and the writer's own
    /// older one may follow it: the events between the two are converted
    /// between them, not by stretching the next (short, so less exact)
    /// segment backwards.
    #[test]
    fn an_older_snapshot_written_late_still_brackets_the_events_before_the_fresh_one() {
        let mut map = ClockMap::new(1e9);
        assert_eq!(map.add(1_000_000, 1_000_000), None, "fresh, at connect");
        assert_eq!(map.add(0, 0), None, "the writer's, from before");
        // A short segment whose rate is off by a little jitter.
        assert_eq!(map.add(1_100_000, 1_100_040), None);
        assert_eq!(map.to_ns(500_000), Some(500_000));
        assert_eq!(map.rejected, 0);
        // One that does not fit between its neighbours is not taken.
        assert_eq!(map.add(600_000, 1_000_000), None);
        assert_eq!(map.rejected, 1);
        assert_eq!(map.to_ns(500_000), Some(500_000));
    }

    /// The fast conversion is the exact one (`interpolate`'s 128-bit
    /// division), including where `dt * span_ns / span_t` is a whole
    /// number, the case where the fixed-point quotient falls one short.
    #[test]
    fn a_segment_converts_exactly_as_the_division_does() {
        let mut rand = crate::test_rand::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rand.next();
        let mut checked = 0;
        for i in 0..20_000u64 {
            // Spans like real snapshots' (a TSC at 1-4 GHz, 0.1-5 s), and
            // small odd ones where the exact quotients are frequent.
            let (span_t, span_ns) = if i % 2 == 0 {
                let span_ns = 100_000_000 + next() % 4_900_000_000;
                (span_ns + next() % (3 * span_ns), span_ns)
            } else {
                (1 + next() % 1000, next() % 5000)
            };
            let a = (next() % (1 << 50), next() % (1 << 50));
            let segment = Segment::new(a.0, a.0 + span_t, a, (a.0 + span_t, a.1 + span_ns));
            for k in 0..8u64 {
                let dt = match k {
                    // Multiples of the span's reduced denominator: whole
                    // quotients.
                    0..=3 => span_t * (1 + next() % 4),
                    4 => span_t / (1 + next() % 7) * (1 + next() % 3),
                    _ => next() % (span_t.saturating_mul(3) + 1),
                };
                let ticks = a.0 + dt;
                assert_eq!(
                    segment.convert(ticks),
                    interpolate(a, segment.b, ticks),
                    "segment {a:?} + ({span_t}, {span_ns}), ticks {ticks}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 160_000);
    }

    #[test]
    fn the_converter_gives_what_to_ns_gives() {
        // A TSC (ticks faster than ns), and a counter slower than ns.
        for (rate, per_step) in [(2.4e9, 240_000_000u64), (1e8, 10_000_000)] {
            check_converter(rate, per_step);
        }
    }

    fn check_converter(rate: f64, per_step: u64) {
        let mut map = ClockMap::new(rate);
        let mut ticks = 1_000_000_007u64;
        let mut ns = 5_000_000_011u64;
        let mut last_start = ticks;
        for i in 0..50u64 {
            map.add(ticks, ns);
            last_start = ticks;
            ticks += per_step + i * 7919;
            ns += 100_000_000 + i * 104_729 % 3;
        }
        map.add(ticks, ns + 5);
        let mut converter = map.converter();
        let mut probe = 0u64;
        for i in 0..200_000u64 {
            // Forwards in small steps, with jumps back and far ahead.
            probe = match i % 1000 {
                0 => probe / 3,
                999 => u64::MAX - i,
                _ => probe.wrapping_add(61_234 + i % 7),
            };
            assert_eq!(converter.to_ns(probe), map.to_ns(probe), "ticks {probe}");
        }
        for probe in [
            0,
            1,
            1_000_000_006,
            1_000_000_007,
            ticks,
            ticks + 1,
            u64::MAX,
        ] {
            assert_eq!(converter.to_ns(probe), map.to_ns(probe), "ticks {probe}");
        }
        // Past the last snapshot, where `dt * whole` (whole nanoseconds
        // per tick, up to 20 here) stops fitting in a u64.
        for whole in 1..=20 {
            let edge = last_start.saturating_add(u64::MAX / whole);
            for probe in [edge - 1, edge, edge.saturating_add(1)] {
                assert_eq!(converter.to_ns(probe), map.to_ns(probe), "ticks {probe}");
            }
        }
        let single = {
            let mut map = ClockMap::new(1e9);
            map.add(10, 20);
            map
        };
        assert_eq!(single.converter().to_ns(30), Some(40));
        assert_eq!(ClockMap::new(1e9).converter().to_ns(30), None);
    }

    #[test]
    fn one_snapshot_uses_nominal_rate() {
        let mut map = ClockMap::new(2e9);
        map.add(2000, 10_000);
        assert_eq!(map.to_ns(4000), Some(11_000));
        assert_eq!(ClockMap::new(1e9).to_ns(5), None);
    }

    #[test]
    fn snapshot_tracks_monotonic_clock() {
        let mut map = ClockMap::new(describe().ticks_per_second);
        let first = snapshot();
        map.add(first.ticks, first.monotonic_ns);
        std::thread::sleep(Duration::from_millis(20));
        let second = snapshot();
        map.add(second.ticks, second.monotonic_ns);
        // The counter read is bracketed by clock reads, so a preemption
        // between them widens the bracket rather than failing the test.
        let before = monotonic_ns();
        let t = ticks();
        let after = monotonic_ns();
        let converted = map.to_ns(t).unwrap();
        // Extrapolated 0-1 ms past the last snapshot over a 20 ms segment.
        let bracket = before.saturating_sub(50_000)..=after + 50_000;
        assert!(
            bracket.contains(&converted),
            "{converted} outside {before}..={after} by more than 50 µs"
        );
    }
}
