//! rtrace's C ABI, declared in `include/rtrace.h`: thin wrappers over the
//! core's native API (`rtrace::native`), so C and C++ programs record with
//! the same queue, writer, clock and wire protocol as Rust and Python.
//!
//! Rules at this boundary: every function may be called from any thread;
//! strings are copied, never kept; nothing unwinds into C (`guard`); bad
//! arguments and misuse (NULL, invalid UTF-8, an unbalanced `rtrace_end`,
//! calls while not recording, a too-small token buffer) are reported once
//! per kind on stderr, prefixed `rtrace: `, and the program carries on.

mod boundary;

use std::ffi::{c_char, c_double, c_int};

use boundary::{guard, recording, report, text, Problem};
use rtrace_core::mark::token;
use rtrace_core::native::{self, Options};

/// Size of a buffer that holds a flow token and its NUL
/// (`RTRACE_FLOW_TOKEN_SIZE` in the header).
pub const FLOW_TOKEN_SIZE: usize = token::LEN + 1;

const NULL_NAME: &str = "(null)";
/// What a NULL name becomes, as `text` reports it.
const NULL_RECORDED: &str = "recorded as \"(null)\"";

/// Starts recording this process. `session` NULL: `$RTRACE_SESSION`, else
/// the program's name. `collector` NULL: `$RTRACE_COLLECTOR`, else a local
/// stream file `rtrace-<session>-<pid>.rtrace`. Returns 0, or -1 after
/// printing why on stderr.
///
/// # Safety
///
/// Each argument is NULL or a NUL-terminated string valid during the call.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub unsafe extern "C" fn rtrace_init(session: *const c_char, collector: *const c_char) -> c_int {
    guard(-1, || {
        let mut options = Options::new().recorder(format!(
            "rtrace native {}; C ABI",
            env!("CARGO_PKG_VERSION")
        ));
        if !session.is_null() {
            // SAFETY: the caller passes NULL or a valid C string.
            let session = unsafe { text(session, "rtrace_init", "the session", "ignored") };
            options = options.session(session.unwrap_or_default().into_owned());
        }
        if !collector.is_null() {
            // SAFETY: the caller passes NULL or a valid C string.
            let collector = unsafe { text(collector, "rtrace_init", "the collector", "ignored") };
            options = options.collector(collector.unwrap_or_default().into_owned());
        }
        match options.start() {
            Ok(_) => 0,
            Err(native::Error::AlreadyRecording { session, target }) => {
                // The library's message names the Rust call.
                eprintln!(
                    "rtrace: rtrace_init() failed: rtrace is already recording session \
                     {session:?} to {target}; call rtrace_shutdown() first (one recording \
                     per process)"
                );
                -1
            }
            Err(e) => {
                eprintln!("rtrace: rtrace_init() failed: {e}");
                -1
            }
        }
    })
}

/// Stops recording: ends the spans still open in every thread, writes all
/// events and the end marker. No-op when not recording.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub extern "C" fn rtrace_shutdown() {
    guard((), || {
        native::shutdown();
    });
}

/// Begins a span on the calling thread; `rtrace_end` ends it.
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string valid during the call.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub unsafe extern "C" fn rtrace_begin(name: *const c_char) {
    guard((), || {
        if recording("rtrace_begin") {
            // SAFETY: the caller passes NULL or a valid C string.
            let name = unsafe { text(name, "rtrace_begin", "the span name", NULL_RECORDED) };
            // A NULL name still opens a span, so the caller's rtrace_end
            // closes this one and not an outer one.
            native::begin(name.as_deref().unwrap_or(NULL_NAME));
        }
    });
}

/// Ends the innermost span open on the calling thread.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub extern "C" fn rtrace_end() {
    guard((), || {
        if recording("rtrace_end") {
            if let Err(e) = native::end() {
                report(Problem::Unbalanced, || format!("rtrace_end(): {e}"));
            }
        }
    });
}

/// Records an instant.
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string valid during the call.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub unsafe extern "C" fn rtrace_instant(name: *const c_char) {
    guard((), || {
        if recording("rtrace_instant") {
            // SAFETY: the caller passes NULL or a valid C string.
            let name = unsafe { text(name, "rtrace_instant", "the name", NULL_RECORDED) };
            native::instant(name.as_deref().unwrap_or(NULL_NAME));
        }
    });
}

/// Records a counter's new value.
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string valid during the call.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub unsafe extern "C" fn rtrace_counter(name: *const c_char, value: c_double) {
    guard((), || {
        if recording("rtrace_counter") {
            // SAFETY: the caller passes NULL or a valid C string.
            let name = unsafe { text(name, "rtrace_counter", "the name", NULL_RECORDED) };
            native::counter(name.as_deref().unwrap_or(NULL_NAME), value);
        }
    });
}

/// Records the sending end of a flow and writes its token (a W3C
/// traceparent, 55 characters) and a NUL into `token_buf`. Returns the
/// token's length (55). When `token_buf` is NULL or `buf_len` is below
/// `RTRACE_FLOW_TOKEN_SIZE` (56), records nothing, writes an empty string
/// when it can, reports it and returns 0. While not recording, still
/// writes a valid token (that no recorded flow refers to).
///
/// # Safety
///
/// `token_buf` is NULL or points to `buf_len` writable bytes.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub unsafe extern "C" fn rtrace_flow_out(token_buf: *mut c_char, buf_len: usize) -> usize {
    guard(0, || {
        if token_buf.is_null() || buf_len < FLOW_TOKEN_SIZE {
            if !token_buf.is_null() && buf_len > 0 {
                // SAFETY: non-NULL with at least one writable byte.
                unsafe { *token_buf = 0 };
            }
            report(Problem::SmallBuffer, || {
                format!("rtrace_flow_out() needs a buffer of RTRACE_FLOW_TOKEN_SIZE ({FLOW_TOKEN_SIZE}) bytes, got {buf_len}{}; no flow recorded",
                    if token_buf.is_null() { " at NULL" } else { "" })
            });
            return 0;
        }
        recording("rtrace_flow_out");
        let token = native::flow_out();
        let bytes = token.as_bytes();
        // SAFETY: `token_buf` has at least FLOW_TOKEN_SIZE = bytes.len() + 1
        // writable bytes (checked above) and cannot overlap our String.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), token_buf.cast::<u8>(), bytes.len());
            *token_buf.add(bytes.len()) = 0;
        }
        bytes.len()
    })
}

/// Records the receiving end of the flow whose token arrived with a
/// message. A NULL or malformed token is reported and ignored.
///
/// # Safety
///
/// `token` is NULL or a NUL-terminated string valid during the call.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub unsafe extern "C" fn rtrace_flow_in(token: *const c_char) {
    guard((), || {
        if !recording("rtrace_flow_in") {
            return;
        }
        // SAFETY: the caller passes NULL or a valid C string.
        let Some(token) = (unsafe { text(token, "rtrace_flow_in", "the token", "ignored") }) else {
            return;
        };
        if let Err(e) = native::flow_in(&token) {
            report(Problem::BadToken, || {
                format!("rtrace_flow_in(): {e}; ignored")
            });
        }
    });
}

/// Names the calling thread in the timeline (also before `rtrace_init`:
/// the name is kept for later recordings).
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string valid during the call.
#[allow(unsafe_code)] // SAFETY: exported unmangled for C; the name is unique.
#[no_mangle]
pub unsafe extern "C" fn rtrace_thread_name(name: *const c_char) {
    guard((), || {
        // SAFETY: the caller passes NULL or a valid C string.
        if let Some(name) = unsafe { text(name, "rtrace_thread_name", "the name", "ignored") } {
            native::thread_name(&name);
        }
    });
}
