//! The heap of a process whose job is collecting: `rtrace-collect`, as a
//! binary or as the console script that runs it inside Python, and the
//! `rtrace` command line, which hosts `rtrace run`'s collector and merges.
//!
//! Only for processes of rtrace's own: a collector embedded in another
//! program (`rtrace.Collector` in Python) leaves that program's malloc as
//! it is.

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
}
