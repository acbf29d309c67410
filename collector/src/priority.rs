//! The scheduling priority of the threads that carry events, raised only
//! while they fall behind.
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
//! processes' CPU. The thread that writes the Perfetto file
//! (`output::BackgroundFile`) carries every event too: left at nice 0 on a
//! machine whose traced processes ran 2–3.5× faster, it was starved, its
//! queue of chunks filled, the merge waited on it, and 8 of 10 runs of the
//! benchmark above lost events (none of 31 with it raised as well).
//!
//! But a thread at nice -10 that wakes on a traced program's core takes it
//! at once. With one traced process and a CPU to spare, the collector keeps
//! up at any priority, and raised it only made the program wait for it
//! (README, "The collector takes priority only when it falls behind").
//!
//! So the threads run at their own priority until a sign that they fall
//! behind: a stream's socket not read empty for [`BEHIND_AFTER`] (see
//! [`Backlog`]), or more streams open than CPUs (the live loop), whose
//! programs alone may saturate the machine. A backlog further down the
//! line (the merge, the file's writer) reaches the sockets too, as the
//! queues between them fill and the readers wait to hand over what they
//! read. The first sign raises every thread that follows the pressure
//! ([`Follower`]) to `--nice` at once, and they keep it until the collector
//! has no stream open. Not sooner: once raised, a collector on a saturated
//! machine keeps up and shows no more signs; given back after a second
//! without one, it fell behind again, over and over, and one run in 12 of 8
//! processes tracing flat out lost events. Raised on a backlog alone, one
//! in 42 still did, the raise coming too late for a recorder that had
//! started fast with the CPUs to itself; hence the count of streams. The
//! recorders' queues (a million events, tens of milliseconds flat out)
//! cover the moments until the threads are raised. The right to raise
//! (`CAP_SYS_NICE` or `ulimit -e`) is checked at start, and a note says
//! when it is missing.
//!
//! They keep the default policy, not `SCHED_BATCH` (see `rtrace::sched`): a
//! `SCHED_BATCH` thread that wakes waits until the thread running on its CPU
//! ends its slice, and while two traced processes kept both cores busy, the
//! merge and the readers waited long enough, wake-up after wake-up, for a
//! recorder's queue to fill. Measured with two processes tracing fib(28)
//! flat out, 20 times `benches/overhead.py --workloads multiprocessing
//! --modes untraced,rtrace-collector --repeat 10` on 3.13: 18 of 200 runs
//! lost events with the collector's threads under `SCHED_BATCH`, none of 200
//! without it.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The nice value the event-carrying threads take under pressure by
/// default (`--nice`).
pub const DEFAULT_NICE: i32 = -10;

/// How long a stream's socket may go without being read empty before its
/// reader counts as falling behind. A reader that keeps up empties it every
/// few reads; one behind finds every read filled, while the recorder's
/// writes wait and its queue (a million events: 45 ms of the fastest
/// program tracing flat out) fills.
pub const BEHIND_AFTER: Duration = Duration::from_millis(5);

/// Whether the event-carrying threads fell behind, and what they take then.
#[derive(Debug)]
pub struct Pressure {
    /// The nice value under pressure; 0: never raise.
    nice: AtomicI32,
    /// A sign came since the collector last had no stream open.
    behind: AtomicBool,
    /// The threads that follow it (see `Follower`): their ids and own
    /// nice values.
    followers: Mutex<Vec<(libc::pid_t, i32)>>,
}

impl Pressure {
    pub const fn new() -> Pressure {
        Pressure {
            nice: AtomicI32::new(0),
            behind: AtomicBool::new(false),
            followers: Mutex::new(Vec::new()),
        }
    }

    /// From now on, signs of falling behind raise the threads to `nice`.
    pub fn enable(&self, nice: i32) {
        self.nice.store(nice, Ordering::Relaxed);
    }

    /// A sign that the threads fell behind. The first raises every
    /// follower at once: one starved of the CPU (the merge, most likely)
    /// would otherwise wait for its turn to raise itself.
    pub fn note(&self) {
        // A load first: the signs keep coming while behind (the merge notes
        // the count of streams on every arrival), and the lock is not needed.
        let nice = self.nice.load(Ordering::Relaxed);
        if nice == 0 || self.behind.load(Ordering::Relaxed) {
            return;
        }
        self.turn(true, |_| nice);
    }

    /// No stream is open: the threads take their own priority back, and the
    /// next busy spell starts with it.
    pub fn calm(&self) {
        if self.behind.load(Ordering::Relaxed) {
            self.turn(false, |own| own);
        }
    }

    /// Sets `behind` and, if that changed it, gives each follower
    /// `nice(its own value)`, under the followers' lock, so that a thread
    /// that starts following meanwhile (`follow`) and the last of two
    /// turns both leave the threads as the flag says. Best effort: a
    /// thread that may not take a value keeps its own (the right to raise
    /// was checked at start).
    fn turn(&self, behind: bool, nice: impl Fn(i32) -> i32) {
        if let Ok(followers) = self.followers.lock() {
            if self.behind.swap(behind, Ordering::Relaxed) != behind {
                for &(tid, own) in followers.iter() {
                    let _ = set_thread_nice(tid, nice(own));
                }
            }
        }
    }

    /// The nice value the threads should have now: the raised one after a
    /// sign, else `None` (their own).
    pub fn wanted(&self) -> Option<i32> {
        let nice = self.nice.load(Ordering::Relaxed);
        (nice != 0 && self.behind.load(Ordering::Relaxed)).then_some(nice)
    }

    /// Adds the calling thread, `tid`, whose own nice value is `own`; it
    /// takes the raised value at once if the threads are behind.
    fn follow(&self, tid: libc::pid_t, own: i32) {
        if let Ok(mut followers) = self.followers.lock() {
            if let Some(nice) = self.wanted() {
                let _ = set_current_thread_nice(nice);
            }
            followers.push((tid, own));
        }
    }

    /// Forgets a thread before it ends: its id may be reused by another.
    fn unfollow(&self, tid: libc::pid_t) {
        if let Ok(mut followers) = self.followers.lock() {
            followers.retain(|&(t, _)| t != tid);
        }
    }
}

impl Default for Pressure {
    fn default() -> Pressure {
        Pressure::new()
    }
}

/// The collector's pressure, shared by its merge, readers and file writer.
pub static PRESSURE: Pressure = Pressure::new();

/// Watches one stream's reads for a backlog that lasts: every read filling
/// the buffer for `BEHIND_AFTER`.
#[derive(Debug, Default)]
pub struct Backlog {
    /// CLOCK_MONOTONIC ns of the first of the reads filled since the socket
    /// was last read empty.
    full_since_ns: Option<u64>,
}

impl Backlog {
    /// Notes a read of `n` bytes into a buffer of `room`.
    pub fn read(&mut self, n: usize, room: usize) {
        // The clock is read only for a full read, the rarer kind.
        self.note(n >= room, rtrace::clock::monotonic_ns, &PRESSURE);
    }

    fn note(&mut self, full: bool, now_ns: impl FnOnce() -> u64, pressure: &Pressure) {
        if !full {
            // The socket held less than was asked for: it is empty now.
            self.full_since_ns = None;
            return;
        }
        let now_ns = now_ns();
        let since = *self.full_since_ns.get_or_insert(now_ns);
        if now_ns.saturating_sub(since) >= BEHIND_AFTER.as_nanos() as u64 {
            pressure.note();
        }
    }
}

/// Checks that the calling thread may take `nice` (it takes it and gives
/// it back at once), then lets signs of falling behind raise the threads
/// that carry events to it.
pub fn allow_raising(nice: i32) -> io::Result<()> {
    let own = current_thread_nice()?;
    set_current_thread_nice(nice)?;
    set_current_thread_nice(own)?;
    PRESSURE.enable(nice);
    Ok(())
}

/// An event-carrying thread's place among the threads that the
/// collector's pressure raises and lowers (see `Pressure::note`). Each such
/// thread keeps one for its life; dropped, the thread is forgotten before it
/// ends, as its id may be reused.
#[derive(Debug)]
pub struct Follower {
    pressure: &'static Pressure,
    tid: libc::pid_t,
}

impl Follower {
    /// The calling thread's follower of the collector's pressure.
    pub fn new() -> Follower {
        Follower::of(&PRESSURE)
    }

    fn of(pressure: &'static Pressure) -> Follower {
        // A tid is a pid_t: it fits.
        let tid = rtrace::sched::current_tid() as libc::pid_t;
        pressure.follow(tid, current_thread_nice().unwrap_or(0));
        Follower { pressure, tid }
    }
}

impl Default for Follower {
    fn default() -> Follower {
        Follower::new()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.pressure.unfollow(self.tid);
    }
}

/// Sets the calling thread's nice value (on Linux the nice value belongs
/// to a thread: `setpriority(PRIO_PROCESS, 0, ...)` changes only the
/// caller). Lowering it below the current value needs `CAP_SYS_NICE` or a
/// `RLIMIT_NICE` (`ulimit -e`) that allows it.
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    set_thread_nice(0, nice)
}

/// Sets the nice value of thread `tid` (0: the calling thread).
fn set_thread_nice(tid: libc::pid_t, nice: i32) -> io::Result<()> {
    let Ok(who) = libc::id_t::try_from(tid) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) };
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

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn pressure_asks_for_the_raised_value_from_a_sign_until_calm() {
        let pressure = Pressure::new();
        pressure.enable(-10);
        assert_eq!(pressure.wanted(), None, "no sign yet");
        pressure.note();
        assert_eq!(pressure.wanted(), Some(-10));
        pressure.calm();
        assert_eq!(pressure.wanted(), None, "no stream open");
        pressure.note();
        assert_eq!(pressure.wanted(), Some(-10), "and raised again");
    }

    #[test]
    fn pressure_never_raises_when_not_enabled() {
        let pressure = Pressure::new(); // --nice 0, or no right to raise
        pressure.note();
        assert_eq!(pressure.wanted(), None);
    }

    #[test]
    fn a_backlog_that_lasts_is_pressure_and_one_read_empty_ends_it() {
        let behind = BEHIND_AFTER.as_nanos() as u64;
        let pressure = Pressure::new();
        pressure.enable(-10);
        let mut backlog = Backlog::default();
        let t0 = 5 * SECOND;
        for at in [t0, t0 + behind / 2, t0 + behind - 1] {
            backlog.note(true, || at, &pressure);
        }
        assert_eq!(
            pressure.wanted(),
            None,
            "full for less than BEHIND_AFTER: a burst"
        );
        backlog.note(
            false,
            || unreachable!("no clock for a short read"),
            &pressure,
        );
        backlog.note(true, || t0 + behind + 1, &pressure);
        assert_eq!(pressure.wanted(), None, "read empty: starts again");
        backlog.note(true, || t0 + 2 * behind + 1, &pressure);
        assert_eq!(
            pressure.wanted(),
            Some(-10),
            "full for BEHIND_AFTER: behind"
        );
    }

    #[test]
    fn a_follower_takes_the_raised_value_under_pressure_and_its_own_after() {
        let pressure: &'static Pressure = Box::leak(Box::new(Pressure::new()));
        std::thread::spawn(move || {
            let own = current_thread_nice().unwrap();
            // A higher value than one's own needs no privilege; going back
            // to one's own does (checked where the test runs as root).
            let raised = (own + 3).min(19);
            pressure.enable(raised);
            let _follower = Follower::of(pressure);
            assert_eq!(current_thread_nice().unwrap(), own, "no pressure yet");
            pressure.note();
            assert_eq!(current_thread_nice().unwrap(), raised);
            // One that starts following while behind takes it at once.
            std::thread::spawn(move || {
                let _late = Follower::of(pressure);
                assert_eq!(
                    current_thread_nice().unwrap(),
                    raised,
                    "started while behind"
                );
            })
            .join()
            .unwrap();
            // SAFETY: geteuid has no arguments and cannot fail.
            #[allow(unsafe_code)]
            if unsafe { libc::geteuid() } == 0 {
                pressure.calm();
                assert_eq!(current_thread_nice().unwrap(), own, "calm again");
            }
        })
        .join()
        .unwrap();
    }

    /// The nice value of thread `tid` of this process.
    fn nice_of(tid: libc::pid_t) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[16].parse().unwrap()
    }

    #[test]
    fn the_first_sign_raises_every_follower_at_once_and_the_calm_lowers_them() {
        let pressure: &'static Pressure = Box::leak(Box::new(Pressure::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let follower = std::thread::spawn(move || {
            let own = current_thread_nice().unwrap();
            let me = Follower::of(pressure);
            tx.send((me.tid, own)).unwrap();
            // Waits: changed from outside.
            wait.recv().unwrap();
        });
        let (tid, own) = rx.recv().unwrap();
        let raised = (own + 3).min(19);
        pressure.enable(raised);
        pressure.note();
        assert_eq!(nice_of(tid), raised);
        // SAFETY: geteuid has no arguments and cannot fail.
        #[allow(unsafe_code)]
        if unsafe { libc::geteuid() } == 0 {
            pressure.calm();
            assert_eq!(nice_of(tid), own, "calm: its own value back");
        }
        done.send(()).unwrap();
        follower.join().unwrap();
        assert!(
            pressure.followers.lock().unwrap().is_empty(),
            "forgotten at its end"
        );
    }
}
