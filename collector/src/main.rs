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
/// back to the kernel, so each batch's pages were faulted in and zeroed
/// anew: ~15 % of a live collector's CPU. With a fixed mapping threshold
/// and a high trim threshold the freed blocks are reused; the peak memory
/// is the same (bounded by the reorder window), it is only returned later.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters, and runs
    // here before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
