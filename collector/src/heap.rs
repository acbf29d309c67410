//! The heap of a process whose job is collecting: `rtrace-collect`, as a
//! binary or as the console script that runs it inside Python, and the
//! `rtrace` command line, which hosts `rtrace run`'s collector and merges.
//! Tuned, freed memory stays with the collector; it gives it back once it
//! has been idle a while (`IdleTrim`).
//!
//! Only for processes of rtrace's own: a collector embedded in another
//! program (`rtrace.Collector` in Python) leaves that program's malloc as
//! it is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Tells glibc's malloc to keep memory the collector frees for reuse; call
/// it first thing. Does nothing where malloc is not glibc's.
///
/// Every batch passes through buffers of 100–250 KB (its decoded columns,
/// its packets) made on a reader thread and freed on the merge thread.
/// By default glibc maps blocks that large afresh and gives freed memory
/// back to the kernel, so a batch's pages are faulted in and zeroed anew.
/// An offline merge of four recorded streams (20 M events) took 86,000
/// page faults and 0.21 s in the kernel untuned, 59,000 and 0.15 s tuned
/// (about the peak memory's pages, each faulted in once), at the same
/// peak (235 MB). One arena for all threads, so that the blocks one thread
/// frees serve the next; the reader threads allocate once per batch, so
/// sharing the arena's lock costs nothing measurable.
///
/// Huge pages for the heap (`MADV_HUGEPAGE` on it, as glibc's
/// `glibc.malloc.hugetlb=1` does) were tried and left out: they cut an
/// offline merge's CPU by 10–30 %, but in a VM a fresh collector's first
/// run paid for first touching its huge pages, and a live collector
/// taking 8 processes tracing flat out then lost events (README,
/// "Collector throughput").
pub fn tune_for_collecting() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; it takes
    // malloc's own lock, so another thread may be allocating meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    TUNED.store(true, Ordering::Relaxed);
}

/// Set by `tune_for_collecting`: this process's heap is the collector's.
static TUNED: AtomicBool = AtomicBool::new(false);

/// How long a collector with nothing to do (no stream open, nothing held
/// for the merge) waits before giving its free memory back: long enough
/// that processes started one after another do not make it fault in its
/// buffers anew each time.
pub const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);

/// Gives a tuned heap's free memory back to the kernel once the collector
/// has been idle for `IDLE_TRIM_AFTER`, once per idle spell. Without it a
/// long-running `rtrace-collect --listen` kept the peak of its busiest
/// moment for good (the trim threshold above is 1 GB): 62 MB after four
/// processes had streamed 9 M events each, and after eight tracing flat
/// out the peak of that run (91–248 MB in `benches/live.py`'s runs).
#[derive(Debug, Default)]
pub struct IdleTrim {
    /// Since when the collector has been idle, and whether it has trimmed
    /// in this spell.
    idle: Option<(Instant, bool)>,
}

impl IdleTrim {
    /// Called by the live loop at each turn; `idle` is true while no stream
    /// is open and the merge holds no event. When it is time, calls
    /// `release` (which frees what the collector keeps for reuse) and then
    /// trims; returns true when it did.
    pub fn tick(&mut self, idle: bool, now: Instant, release: impl FnOnce()) -> bool {
        if !idle {
            self.idle = None;
            return false;
        }
        let (since, trimmed) = self.idle.get_or_insert((now, false));
        if *trimmed || now.duration_since(*since) < IDLE_TRIM_AFTER {
            return false;
        }
        *trimmed = true;
        release();
        trim();
        true
    }
}

/// Returns the free memory of a tuned heap to the kernel (nothing for an
/// untuned one: a host program's malloc is its own, and untuned glibc
/// trims by itself).
fn trim() {
    if !TUNED.load(Ordering::Relaxed) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes each arena's lock and only returns pages
    // that hold no allocated block; other threads may allocate meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_idle_spell_after_the_delay() {
        let mut trim = IdleTrim::default();
        let released = std::cell::Cell::new(0);
        let mut tick = |idle, at| trim.tick(idle, at, || released.set(released.get() + 1));
        let t0 = Instant::now();
        assert!(!tick(true, t0));
        assert!(!tick(true, t0 + IDLE_TRIM_AFTER / 2));
        assert!(tick(true, t0 + IDLE_TRIM_AFTER));
        assert!(!tick(true, t0 + IDLE_TRIM_AFTER * 3), "once per spell");
        // Busy again: a new spell starts from its own beginning.
        let t1 = t0 + IDLE_TRIM_AFTER * 4;
        assert!(!tick(false, t1));
        assert!(!tick(true, t1));
        assert!(!tick(true, t1 + IDLE_TRIM_AFTER / 2));
        assert!(tick(true, t1 + IDLE_TRIM_AFTER * 2));
        // What is kept for reuse is released before each trim.
        assert_eq!(released.get(), 2);
    }
}
