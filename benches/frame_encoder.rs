//! Cost of the recorder's writer thread per event: encoding batches of
//! calls and returns into stream frames (`wire::batch::PlainFrames`), in
//! ns of thread CPU per event, and the bytes per event it writes. Plain
//! std, no harness: `cargo bench --bench frame_encoder` (release profile).
//!
//! Three shapes of batch, 16,384 events each (a thread buffer's worth),
//! the same batch encoded again and again by one encoder, as a writer
//! does batch after batch of a steady program: fib's (one function, met
//! first: one-byte codes, no palette), a program's hot path (20 functions
//! met after the first 8: two-byte codes, written through the palette as
//! one byte), and a batch of 200 functions (more than 128 codes: ranked by
//! frequency). Tick deltas of 20-80, as a flat-out program's TSC gives.
//! Median of rounds, after a warm-up.

mod common;

use std::hint::black_box;

use common::thread_cpu_ns;
use rtrace::wire::batch::PlainFrames;
use rtrace::{FunctionId, Kind, RawEvent};

const EVENTS: usize = 16 * 1024;
const BATCHES: usize = 200;
const ROUNDS: usize = 9;

/// A batch of calls and returns of `functions` (xorshift-chosen, nested
/// up to 30 deep).
fn batch(functions: &[u32]) -> Vec<RawEvent> {
    let mut x = 88_172_645_463_325_252u64;
    let mut ticks = 1u64 << 30;
    let mut stack = Vec::new();
    (0..EVENTS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ticks += 20 + x % 60;
            if stack.len() > 30 || (stack.len() > 3 && (x >> 20) % 2 == 0) {
                let f = stack.pop().expect("deeper than 3");
                RawEvent::new(ticks, FunctionId(f), Kind::Return, 0)
            } else {
                let f = functions[(x >> 8) as usize % functions.len()];
                stack.push(f);
                RawEvent::new(ticks, FunctionId(f), Kind::Call, 0)
            }
        })
        .collect()
}

/// Median ns of thread CPU per event, and bytes per event.
fn measure(events: &[RawEvent]) -> (f64, f64) {
    let mut frames = PlainFrames::new();
    let mut out = Vec::with_capacity(EVENTS * 8);
    let mut encode = |batches: usize| {
        for _ in 0..batches {
            out.clear();
            assert!(frames.encode(1, black_box(events), 0, &mut out));
        }
        out.len()
    };
    encode(BATCHES / 10);
    let mut per_event = Vec::new();
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let start = thread_cpu_ns();
        bytes = encode(BATCHES);
        let ns = (thread_cpu_ns() - start) as f64;
        per_event.push(ns / (BATCHES * events.len()) as f64);
    }
    per_event.sort_by(f64::total_cmp);
    (per_event[ROUNDS / 2], bytes as f64 / events.len() as f64)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let shapes: [(&str, Vec<u32>); 3] = [
        ("fib (1 function)", vec![1]),
        ("20 functions", (10..30).collect()),
        ("200 functions", (10..210).collect()),
    ];
    println!(
        "rtrace writer: encoding plain batches of {EVENTS} events \
         (median of {ROUNDS} rounds of {BATCHES} batches, one thread)"
    );
    println!(
        "{:<20} {:>14} {:>12}",
        "batch", "CPU ns/event", "bytes/event"
    );
    for (name, functions) in shapes {
        let (ns, bytes) = measure(&batch(&functions));
        println!("{name:<20} {ns:>14.2} {bytes:>12.2}");
    }
}
