//! The scheduling priority of the threads that carry events.
//!
//! Everything the collector receives passes through one merge thread, and
//! each stream through its reader thread. When the machine's CPUs are
//! saturated — the traced programs themselves run flat out, as in a
//! benchmark or on a busy host — the scheduler gives each of those one
//! share among dozens of busy threads; they fall behind, the readers stop
//! reading, and the recorders drop events. Measured on the 2-core
//! development machine with 8 processes tracing flat out (`benches/live.py
//! --events 10e6 --repeat 3`, 80 M events): 13.7–24.3 M events dropped at
//! nice 0; 0.02–2.2 M with the merge thread alone at nice -10; none with
//! the readers at -10 too, the collector still using 0.6× the traced
//! processes' CPU. So the collector asks for that priority for those
//! threads (`--nice`), and says so when it may not have it.
//!
//! The thread that writes the Perfetto file (`output::BackgroundFile`)
//! carries every event too: left at nice 0 on a machine whose traced
//! processes ran 2–3.5× faster, it was starved, its queue of chunks filled,
//! the merge waited on it, and 8 of 10 runs of the benchmark above lost
//! events (none of 31 with it raised as well). It takes the merge thread's
//! value with its first chunk, as it is started before the merge raises.
//!
//! Unlike the recorders' writers, they keep the default policy, not
//! `SCHED_BATCH` (see `rtrace::sched`): a `SCHED_BATCH` thread that wakes
//! waits until the thread running on its CPU ends its slice, and while two
//! traced processes kept both cores busy, the merge and the readers waited
//! long enough, wake-up after wake-up, for a recorder's queue to fill.
//! Measured with two processes tracing fib(28) flat out, 20 times
//! `benches/overhead.py --workloads multiprocessing --modes
//! untraced,rtrace-collector --repeat 10` on 3.13: 18 of 200 runs lost
//! events with the collector's threads under `SCHED_BATCH`, none of 200
//! without it. A single traced process (fib(30) on 3.12) was preempted a
//! little more often, 33–47 times a run against 18–31, but waited no
//! longer for a CPU: 7–11 ms a run either way.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The nice value the event-carrying threads ask for by default (`--nice`).
pub const DEFAULT_NICE: i32 = -10;

/// The nice value the merge thread got, for the readers to take (0: none).
static MERGE_THREAD_NICE: AtomicI32 = AtomicI32::new(0);

/// Gives the calling (merge) thread `nice`; the stream readers started
/// after it follow (`follow_merge_thread`).
pub fn raise_merge_thread(nice: i32) -> io::Result<()> {
    set_current_thread_nice(nice)?;
    MERGE_THREAD_NICE.store(nice, Ordering::Relaxed);
    Ok(())
}

/// Gives the calling (stream reader) thread the merge thread's nice value,
/// if it was raised. A failure leaves the thread as it was: the merge
/// thread's note already said why.
pub fn follow_merge_thread() {
    let nice = MERGE_THREAD_NICE.load(Ordering::Relaxed);
    if nice != 0 {
        let _ = set_current_thread_nice(nice);
    }
}

/// Sets the calling thread's nice value (on Linux the nice value belongs
/// to a thread: `setpriority(PRIO_PROCESS, 0, ...)` changes only the
/// caller). Lowering it below the current value needs `CAP_SYS_NICE` or a
/// `RLIMIT_NICE` (`ulimit -e`) that allows it.
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's nice value.
pub fn current_thread_nice() -> io::Result<i32> {
    // getpriority can return -1 as a value: errno tells them apart.
    // SAFETY: errno is thread-local; clearing it and reading it back
    // around the call is how getpriority(2) says to check for errors.
    #[allow(unsafe_code)]
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        match *libc::__errno_location() {
            0 => Ok(nice),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// What to print when the merge thread could not get `nice`.
pub fn not_raised_note(nice: i32, error: &io::Error) -> String {
    format!(
        "rtrace-collect: note: could not raise the priority of the threads that carry \
         events to nice {nice} ({error}); when busy programs saturate the CPUs they can \
         fall behind and the recorders drop (and count) events. Allow it with CAP_SYS_NICE \
         (sudo setcap cap_sys_nice+ep \"$(command -v rtrace-collect)\") or a nice limit \
         (ulimit -e 30), or pass --nice 0 to leave priorities alone."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_the_nice_value_of_a_thread_leaves_the_others() {
        let before = current_thread_nice().unwrap();
        std::thread::spawn(move || {
            set_current_thread_nice(before + 5).unwrap();
            assert_eq!(current_thread_nice().unwrap(), before + 5);
        })
        .join()
        .unwrap();
        assert_eq!(current_thread_nice().unwrap(), before);
    }
}
