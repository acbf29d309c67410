//! The `rtrace-collect` binary: all of it lives in the library's `cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    ExitCode::from(rtrace_collect::cli::main_with_args(
        std::env::args().collect(),
    ))
}

/// Tells glibc's malloc to keep memory the collector frees for reuse.
///
/// Every batch passes through buffers of 100–250 KB (its decoded columns,
/// its packets) made on a reader thread and freed on the merge thread.
/// By default glibc maps blocks that large afresh and gives freed memory
/// back to the kernel, so a batch's pages were faulted in and zeroed anew
/// (page faults of a live collector taking 40 M events from one process:
/// 89,100 by default, 60,100 with these thresholds, about the peak
/// memory's pages, each faulted in once). One arena for all threads: with one
/// per reader thread, each kept its own freed blocks, and eight streams
/// peaked at 420–610 MB instead of 250 MB. The reader threads allocate
/// once per batch, so sharing the arena's lock costs nothing measurable.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters, and runs
    // here before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
