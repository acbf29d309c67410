//! The scheduling policy of threads that move events rather than make them.
//!
//! A recorder's writer wakes hundreds of times a second while a program
//! traces flat out (each hand-over of a full buffer wakes it). Under the
//! default policy a woken thread may preempt the one running on its CPU,
//! and the scheduler tends to wake it on the CPU of the thread that woke
//! it: the traced thread. `sched_switch` tracing on the 2-core development
//! machine (fib(30), 3.12, streaming to a collector on the same host)
//! showed nearly all of the traced thread's preemptions by its own
//! writer; README ("Giving way") has the counts. `SCHED_BATCH` keeps the
//! thread's share of the CPU (its nice value and weight are unchanged)
//! but gives up preemption on wake-up: the woken writer runs on an idle
//! CPU at once, or when the running thread's slice ends. Its writes come a few
//! milliseconds later on a busy machine, which nothing depends on: the
//! clock exchange stamps what it receives in the kernel (`rxstamp`).

use std::io;

/// Puts the calling thread under `SCHED_BATCH` (Linux; elsewhere a no-op).
/// Needs no privilege. Affects only the calling thread: call it from the
/// thread itself, never from a thread of the program being traced.
pub fn batch_current_thread() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration;
        // pid 0 is the calling thread, and nothing else is touched.
        #[allow(unsafe_code)]
        let status = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn current_thread_is_batch() -> bool {
        // SAFETY: sched_getscheduler takes a pid and touches no memory.
        #[allow(unsafe_code)]
        let policy = unsafe { libc::sched_getscheduler(0) };
        policy == libc::SCHED_BATCH
    }

    #[test]
    fn batch_applies_to_the_calling_thread_only_and_keeps_its_nice_value() {
        // SAFETY: getpriority/setpriority take plain integers.
        #[allow(unsafe_code)]
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        // 19 is the highest nice value: a test run at 17 or above gets 19.
        let raised = (before + 3).min(19);
        std::thread::spawn(move || {
            #[allow(unsafe_code)]
            // SAFETY: as above; raising one's own nice value needs no privilege.
            let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, raised) };
            assert_eq!(status, 0);
            batch_current_thread().unwrap();
            assert!(current_thread_is_batch());
            assert_eq!(nice(), raised);
        })
        .join()
        .unwrap();
        assert!(!current_thread_is_batch());
        assert_eq!(nice(), before);
    }
}
