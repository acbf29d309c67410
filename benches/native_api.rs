//! Cost of the native API's hot path, in ns per call, recording to a stream
//! file and with nothing recording (the disabled path). Plain std, no
//! harness: `cargo bench --bench native_api` (release profile).
//!
//! Each case runs on one thread, with a warm-up, then the median of
//! several rounds is printed. A span is two events (begin and end). The
//! recording uses the default policy (`drop`): this loop produces events
//! faster than the writer thread encodes them, so part of them are dropped
//! (and counted) at hand-over; the bench prints how many, and the writer's
//! rate.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::thread_cpu_ns;
use rtrace::native::{self, Options};
use rtrace::ArgRef;

const CALLS: u64 = 1_000_000;
const ROUNDS: usize = 7;

/// Median over rounds of (wall ns, thread CPU ns) per call.
fn median_ns_per_call(mut f: impl FnMut(u64)) -> (f64, f64) {
    f(CALLS / 10);
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..ROUNDS {
        let (start, start_cpu) = (Instant::now(), thread_cpu_ns());
        f(CALLS);
        cpu.push((thread_cpu_ns() - start_cpu) as f64 / CALLS as f64);
        wall.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (wall[ROUNDS / 2], cpu[ROUNDS / 2])
}

fn cases() -> Vec<(&'static str, (f64, f64))> {
    vec![
        (
            "(clock read alone)",
            median_ns_per_call(|n| {
                for _ in 0..n {
                    black_box(rtrace::clock::ticks());
                }
            }),
        ),
        (
            "span (begin + end, guard)",
            median_ns_per_call(|n| {
                for _ in 0..n {
                    let _s = rtrace::span(black_box("handle"));
                }
            }),
        ),
        (
            "span with 2 args",
            median_ns_per_call(|n| {
                for i in 0..n {
                    let _s = rtrace::span_with(
                        black_box("handle"),
                        &[("i", ArgRef::Int(i as i64)), ("ok", ArgRef::Bool(true))],
                    );
                }
            }),
        ),
        (
            "instant",
            median_ns_per_call(|n| {
                for _ in 0..n {
                    rtrace::instant(black_box("tick"));
                }
            }),
        ),
        (
            "counter",
            median_ns_per_call(|n| {
                for i in 0..n {
                    rtrace::counter(black_box("depth"), i as f64);
                }
            }),
        ),
        (
            "flow_out (token string)",
            median_ns_per_call(|n| {
                for _ in 0..n {
                    black_box(rtrace::flow_out());
                }
            }),
        ),
    ]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let off = cases();
    let dir = std::env::temp_dir().join(format!("rtrace-bench-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bench.rtrace");
    Options::new()
        .session("bench")
        .output(&path)
        .start()
        .expect("start recording");
    let start = Instant::now();
    let on = cases();
    let elapsed = start.elapsed();
    let stats = native::shutdown().expect("stats");
    println!(
        "rtrace native API, ns per call (median of {ROUNDS} rounds of {CALLS} calls, one thread)"
    );
    println!("{:<28} {:>16} {:>16}", "call", "recording", "not recording");
    println!("{:<28} {:>16} {:>16}", "", "CPU (wall)", "CPU (wall)");
    for ((name, on), (_, off)) in on.iter().zip(&off) {
        let cell = |(wall, cpu): (f64, f64)| format!("{cpu:.1} ({wall:.1})");
        println!("{name:<28} {:>16} {:>16}", cell(*on), cell(*off));
    }
    println!(
        "events written: {} ({:.1} M/s while recording), lost (queue full, counted): {}, bytes/event: {:.2}",
        stats.events,
        stats.events as f64 / elapsed.as_secs_f64() / 1e6,
        stats.lost,
        stats.bytes as f64 / stats.events.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
