//! The one conversion from core errors to Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

// Named `rtrace.RecordingError`, `rtrace.StreamError` in tracebacks: where
// users import them from, not the extension module that defines them.
create_exception!(
    rtrace,
    RecordingError,
    PyRuntimeError,
    "Recording cannot start or stop as asked (e.g. one is already active)."
);
create_exception!(
    rtrace,
    StreamError,
    PyValueError,
    "A stream file is not valid rtrace data (bad magic, newer version, malformed frame)."
);

/// Wraps a core error for Python.
pub struct Error(pub rtrace::Error);

impl From<rtrace::Error> for Error {
    fn from(e: rtrace::Error) -> Error {
        Error(e)
    }
}

impl From<Error> for PyErr {
    fn from(Error(e): Error) -> PyErr {
        let message = e.to_string();
        match e {
            // Python's own form, `[Errno 2] No such file or directory:
            // 'x.rtrace'`, with `.errno` and `.filename` set (and the
            // subclass, e.g. FileNotFoundError, that the errno gives).
            rtrace::Error::Open { path, error } => match error.raw_os_error() {
                Some(errno) => {
                    PyOSError::new_err((errno, strerror(&error, errno), path.into_os_string()))
                }
                None => PyOSError::new_err(message),
            },
            rtrace::Error::Io { error, .. } => {
                PyOSError::new_err((error.raw_os_error().unwrap_or(0), message))
            }
            rtrace::Error::Config(_) => PyValueError::new_err(message),
            _ => StreamError::new_err(message),
        }
    }
}

/// The system's text for `errno` ("No such file or directory"), without
/// the " (os error 2)" that Rust appends.
fn strerror(error: &std::io::Error, errno: i32) -> String {
    let text = error.to_string();
    match text.strip_suffix(&format!(" (os error {errno})")) {
        Some(plain) => plain.to_owned(),
        None => text,
    }
}
