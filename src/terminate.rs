//! Finishing the stream when the process is asked to terminate (SIGTERM).
//!
//! A process killed by SIGTERM's default action dies at once, and with it
//! the events still in memory: a `multiprocessing.Pool` leaving its `with`
//! block terminates its workers that way a moment after their last task.
//! While a recorder that asked for it runs, and only if SIGTERM had its
//! default action, rtrace's handler merely notes the signal; the writer
//! thread (which polls for it) then writes what is recorded, ends the
//! stream, restores the default action and raises SIGTERM again, so the
//! process still dies of SIGTERM, a few milliseconds later. A watchdog
//! makes sure of that within `GRACE` even if the stream cannot be written.
//!
//! The handler is async-signal-safe: it stores an atomic, or, in a process
//! without a running recorder (a forked child that does not record), puts
//! the default action back and raises the signal again at once.

// Signal handling needs libc calls; each unsafe block says why it holds.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Longest delay the recorder adds to a termination.
pub const GRACE: Duration = Duration::from_secs(1);

/// Set by the handler; read by the writer.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The process whose writer finishes the stream (0: none).
static OWNER: AtomicU32 = AtomicU32::new(0);
/// True while rtrace's handler is installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_signal: libc::c_int) {
    // SAFETY: getpid is async-signal-safe.
    let pid = unsafe { libc::getpid() } as u32;
    if OWNER.load(Ordering::Acquire) == pid {
        REQUESTED.store(true, Ordering::Release);
    } else {
        die_of_sigterm();
    }
}

/// Puts SIGTERM's default action back and raises it: the process ends as
/// SIGTERM would have ended it. Async-signal-safe.
pub fn die_of_sigterm() {
    // SAFETY: signal, getpid and kill are async-signal-safe; SIG_DFL is a
    // valid disposition.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

/// Installs the handler for this process if SIGTERM has its default
/// action (a program's own handler is left alone). Returns true if rtrace
/// now handles SIGTERM.
pub fn arm() -> bool {
    OWNER.store(std::process::id(), Ordering::Release);
    if INSTALLED.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: a zeroed sigaction is a valid out-parameter; querying the
    // current action (null new action) has no side effect.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut current) } != 0
        || current.sa_sigaction != libc::SIG_DFL
    {
        return false;
    }
    // SAFETY: zeroed then filled: a handler that is async-signal-safe, an
    // empty mask, SA_RESTART so that interrupted system calls resume.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigterm as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: a valid action for a catchable signal.
    let installed = unsafe { libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) } == 0;
    INSTALLED.store(installed, Ordering::Release);
    installed
}

/// Removes the handler if it is still rtrace's (the recording ended).
pub fn disarm() {
    OWNER.store(0, Ordering::Release);
    if !INSTALLED.swap(false, Ordering::AcqRel) {
        return;
    }
    // SAFETY: a zeroed sigaction is a valid out-parameter.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying only.
    let ours = unsafe { libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut current) } == 0
        && current.sa_sigaction == on_sigterm as *const () as usize;
    if ours {
        // SAFETY: restores the default action we replaced.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_DFL) };
    }
    if REQUESTED.load(Ordering::Acquire) {
        // A termination arrived while no writer acted on it.
        die_of_sigterm();
    }
}

/// True once SIGTERM arrived in the owning process.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Acquire) && OWNER.load(Ordering::Acquire) == std::process::id()
}

/// True while the handler is installed (the writer then polls often).
pub fn armed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Starts the watchdog that ends the process after `GRACE` whatever
/// happens to the final write.
pub fn start_watchdog() {
    let spawned = std::thread::Builder::new()
        .name("rtrace-sigterm".into())
        .spawn(|| {
            std::thread::sleep(GRACE);
            die_of_sigterm();
        });
    if spawned.is_err() {
        die_of_sigterm();
    }
}
