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

/// The calling thread's OS thread id (what Python's
/// `threading.get_native_id()` returns): the one place the recorder, the
/// Python hook and the collector take it from.
#[inline]
pub fn current_tid() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let tid = unsafe { libc::gettid() };
    tid as u64
}

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

/// Moves thread `tid` of this process to the CPU the caller runs on, its
/// allowed CPUs left as they were: for a thread the caller is about to
/// wait for. A woken thread that a higher-priority one then preempts
/// stays queued on that busy CPU, even when another CPU falls idle, until
/// the scheduler balances its queues again (up to a tick, 4 ms at
/// HZ=250): stopping a recording that streams to a collector on the same
/// host, the writer's last writes waited there 1.5 ms behind the
/// collector's threads while the stopping thread's CPU sat idle (a
/// `sched_switch` trace on the 2-core development machine). Setting its
/// affinity to this CPU alone moves it here at once; setting it back
/// leaves it here, where it runs as soon as the caller sleeps. Best
/// effort: errors are ignored (the thread keeps its CPU). Only for
/// rtrace's own threads, never one of the traced program's.
pub fn move_to_current_cpu(tid: u64) {
    #[cfg(target_os = "linux")]
    {
        let Ok(tid) = libc::pid_t::try_from(tid) else {
            return;
        };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is plain data, valid zeroed (no CPU); both sets
        // live across the calls, which get their true size; CPU_ISSET and
        // CPU_SET only index their bits, with `cpu` checked below
        // CPU_SETSIZE; `tid` names a thread of this process, or none and
        // the calls fail; sched_getcpu touches no memory.
        #[allow(unsafe_code)]
        unsafe {
            let Ok(cpu) = usize::try_from(libc::sched_getcpu()) else {
                return;
            };
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            if cpu >= libc::CPU_SETSIZE as usize
                || libc::sched_getaffinity(tid, size, &mut allowed) != 0
                || !libc::CPU_ISSET(cpu, &allowed)
            {
                return;
            }
            let mut here: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut here);
            if libc::sched_setaffinity(tid, size, &here) == 0 {
                libc::sched_setaffinity(tid, size, &allowed);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = tid;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A thread's allowed CPUs (`tid` 0: the caller).
    fn allowed(tid: libc::pid_t) -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is valid; the call gets its size.
        #[allow(unsafe_code)]
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(libc::sched_getaffinity(tid, size, &mut set), 0);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    /// Lets the caller run on `cpus` only.
    fn allow(cpus: &[usize]) {
        // SAFETY: as in `allowed`; CPU_SET indexes CPUs below CPU_SETSIZE.
        #[allow(unsafe_code)]
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus {
                libc::CPU_SET(c, &mut set);
            }
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(libc::sched_setaffinity(0, size, &set), 0);
        }
    }

    fn current_cpu() -> usize {
        // SAFETY: sched_getcpu takes nothing.
        #[allow(unsafe_code)]
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).unwrap()
    }

    /// The CPU a thread of this process is on (queued or running): field
    /// 39 of /proc/self/task/TID/stat.
    fn cpu_of(tid: u64) -> usize {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // Fields after the name start at field 3 (the state).
        fields[39 - 3].parse().unwrap()
    }

    #[test]
    fn a_busy_thread_moves_to_the_callers_cpu_and_keeps_its_allowed_cpus() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let all = allowed(0);
        if all.len() < 2 {
            return; // nothing to move between
        }
        // This thread stays on one CPU; the other thread starts on another,
        // kept busy by a third so that it does not pull the moved one back.
        let here = current_cpu();
        allow(&[here]);
        let there = *all.iter().find(|&&c| c != here).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicU64::new(0));
        let spin = |cpus: Vec<usize>, then: Option<Vec<usize>>, tid: Option<Arc<AtomicU64>>| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                allow(&cpus);
                while current_cpu() != cpus[0] {
                    std::hint::spin_loop();
                }
                if let Some(cpus) = then {
                    allow(&cpus); // free again, and on `there` for now
                }
                if let Some(tid) = tid {
                    tid.store(crate::sched::current_tid(), Ordering::Release);
                }
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let blocker = spin(vec![there], None, None);
        let mover = spin(vec![there], Some(all.clone()), Some(tid.clone()));
        let moved = loop {
            match tid.load(Ordering::Acquire) {
                0 => std::thread::yield_now(),
                t => break t,
            }
        };
        let before = cpu_of(moved);
        move_to_current_cpu(moved);
        let after = cpu_of(moved);
        let mask = allowed(moved as libc::pid_t);
        stop.store(true, Ordering::Relaxed);
        mover.join().unwrap();
        blocker.join().unwrap();
        allow(&all);
        assert_eq!(before, there);
        assert_eq!(after, here, "still on CPU {after}, not moved to {here}");
        assert_eq!(mask, all, "its allowed CPUs changed");
    }

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
