//! Threads that the legacy hook would never reach: those that come to run
//! Python without going through `threading` (started with
//! `_thread.start_new_thread`, or by C code that calls into Python, such
//! as a ctypes callback on a library's thread). `threading.setprofile`
//! installs the hook only on `threading`'s threads, and the interpreter
//! offers no callback when a thread state is created.
//!
//! So while the legacy hook is on every thread, each flush tick walks the
//! interpreter's thread states (with the GIL held, as `set_legacy_all_threads`
//! does) and installs the hook on those it has not seen yet and that have
//! no profile function at all: a thread with a profiler of its own (another
//! tool's, or one it set itself) is left alone, as is one that `threading`
//! is about to install the hook on (it has the Python-level installer).
//! Each thread state is considered once, when first seen: thread state ids
//! only grow, so "seen" is "below the watermark". A thread is reached from
//! the first tick after it started running Python (20 ms by default): a
//! callback that enters and leaves Python between two ticks is missed.
//!
//! Whether a thread state has a profile function is read in place
//! (`tstate->c_profilefunc` and `c_profileobj`, public in
//! `cpython/pystate.h` but with no accessor for another thread), at offsets
//! checked when the hook is installed against the calling thread, whose
//! hook was just set: if they disagree, nothing is adopted.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

/// `offsetof(PyThreadState, c_profilefunc)`: after `prev`, `next`,
/// `interp`, then on 3.11 seven ints, on 3.12 a 4-byte status and six
/// ints, then `cframe`; on 3.13 `eval_breaker`, the status, `_whence`,
/// `state`, six ints, then `current_frame`.
#[cfg(not(Py_3_13))]
const C_PROFILEFUNC: usize = 64;
#[cfg(Py_3_13)]
const C_PROFILEFUNC: usize = 80;
/// `c_profileobj` follows `c_profilefunc` and `c_tracefunc`.
const C_PROFILEOBJ: usize = C_PROFILEFUNC + 16;

static ARMED: AtomicBool = AtomicBool::new(false);
static LINES: AtomicBool = AtomicBool::new(false);
/// Thread states with a smaller id have been considered.
static WATERMARK: AtomicU64 = AtomicU64::new(0);

/// The profile function and its object, as set on a thread state.
fn profile_of(tstate: *mut ffi::PyThreadState) -> (*const c_void, *mut ffi::PyObject) {
    // SAFETY: `tstate` is a live thread state (GIL held) and both offsets
    // lie inside the public fixed part of the struct on every supported
    // version; the values are only compared, never called or dereferenced.
    #[allow(unsafe_code)]
    unsafe {
        let base = tstate.cast::<u8>();
        (
            *base.add(C_PROFILEFUNC).cast::<*const c_void>(),
            *base.add(C_PROFILEOBJ).cast::<*mut ffi::PyObject>(),
        )
    }
}

/// Starts adopting, after the hook was installed on every thread: every
/// thread state alive now has been given it (or kept its own).
pub fn arm(profile_fn: ffi::Py_tracefunc, profile_obj: *mut ffi::PyObject, lines: bool) {
    // SAFETY: GIL held (called from `set_legacy_all_threads`).
    #[allow(unsafe_code)]
    let current = unsafe { ffi::PyThreadState_Get() };
    if profile_of(current) != (profile_fn as *const c_void, profile_obj) {
        disarm();
        return;
    }
    LINES.store(lines, Ordering::Relaxed);
    WATERMARK.store(next_id(), Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
}

/// Stops adopting (the hook is being removed).
pub fn disarm() {
    ARMED.store(false, Ordering::Relaxed);
}

/// Whether the layout check passed and the legacy hook is on every thread.
fn armed() -> bool {
    ARMED.load(Ordering::Relaxed)
}

/// One more than the largest thread state id alive.
fn next_id() -> u64 {
    crate::legacy::thread_states()
        .into_iter()
        .map(|t| id_of(t) + 1)
        .max()
        .unwrap_or(0)
}

/// A live thread state's id (unique in the interpreter, only growing).
fn id_of(tstate: *mut ffi::PyThreadState) -> u64 {
    // SAFETY: callers pass a live thread state with the GIL held.
    #[allow(unsafe_code)]
    unsafe {
        crate::ffi::PyThreadState_GetID(tstate)
    }
}

/// Installs the hook on thread states first seen that have no profile
/// function. Called on every flush tick, with the GIL held.
pub fn adopt_new_threads(py: Python<'_>) {
    if !armed() {
        return;
    }
    let watermark = WATERMARK.load(Ordering::Relaxed);
    // SAFETY: GIL held. The calling thread (the ticker, which holds the GIL
    // only for the tick and runs no Python code) is never adopted.
    #[allow(unsafe_code)]
    let current = unsafe { ffi::PyThreadState_Get() };
    let mut next = watermark;
    for tstate in crate::legacy::thread_states() {
        let id = id_of(tstate);
        next = next.max(id + 1);
        if id < watermark || tstate == current || !profile_of(tstate).0.is_null() {
            continue;
        }
        crate::legacy::install_on(py, tstate, LINES.load(Ordering::Relaxed));
    }
    WATERMARK.store(next, Ordering::Relaxed);
}
