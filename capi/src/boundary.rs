//! What every C entry point needs: no unwinding across the boundary, C
//! strings read (and copied) safely, and problems reported once on stderr.

use std::borrow::Cow;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;

use rtrace_core::native::report_once;

/// A problem a C caller can cause; each kind is reported once per process.
#[derive(Debug, Clone, Copy)]
pub enum Problem {
    NullString,
    InvalidUtf8,
    Unbalanced,
    NotRecording,
    SmallBuffer,
    BadToken,
    Panic,
}

const PROBLEMS: usize = 7;
static REPORTED: [AtomicBool; PROBLEMS] = [const { AtomicBool::new(false) }; PROBLEMS];

/// Reports `problem` (with `detail`) on stderr, once per kind of problem.
pub fn report(problem: Problem, detail: impl FnOnce() -> String) {
    report_once(&REPORTED[problem as usize], detail);
}

/// Runs an entry point's body; a panic (a bug in rtrace) is reported and
/// turned into `fallback` instead of unwinding into C.
pub fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            report(Problem::Panic, || {
                "internal error (a panic) in rtrace; the call was ignored — please report it"
                    .to_owned()
            });
            fallback
        }
    }
}

/// Reads a C string argument of `function` (the library keeps no pointer:
/// what it needs is copied). NULL is reported, with what the caller then
/// does (`on_null`: "recorded as \"(null)\"", "ignored"), and gives `None`;
/// invalid UTF-8 is reported and replaced (U+FFFD).
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string that stays valid
/// and unchanged for the duration of the call.
#[allow(unsafe_code)] // the C strings of the entry points; see Safety
pub unsafe fn text<'a>(
    ptr: *const c_char,
    function: &str,
    what: &str,
    on_null: &str,
) -> Option<Cow<'a, str>> {
    if ptr.is_null() {
        report(Problem::NullString, || {
            format!("{function}() got NULL as {what}; {on_null}")
        });
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated, valid during this call (the
    // caller's contract above).
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    Some(match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            report(Problem::InvalidUtf8, || {
                format!("{function}() got {what} that is not valid UTF-8; invalid bytes replaced by U+FFFD")
            });
            String::from_utf8_lossy(bytes)
        }
    })
}

/// True while recording; otherwise reports that `function` was called
/// before `rtrace_init` or after `rtrace_shutdown`.
pub fn recording(function: &str) -> bool {
    let active = rtrace_core::native::is_recording();
    if !active {
        report(Problem::NotRecording, || {
            format!("{function}() called while not recording (before rtrace_init() or after rtrace_shutdown()); ignored")
        });
    }
    active
}
