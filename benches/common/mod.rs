//! What the Rust benches share (`mod common;` in each: not a bench target
//! itself, as Cargo takes only `benches/*.rs` and `benches/*/main.rs`).

/// CPU time of the calling thread, in ns: unlike wall time, not inflated
/// when other processes (or the writer thread) share the cores.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
