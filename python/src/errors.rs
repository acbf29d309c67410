//! The one conversion from core errors to Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

create_exception!(
    _native,
    RecordingError,
    PyRuntimeError,
    "Recording cannot start or stop as asked (e.g. one is already active)."
);
create_exception!(
    _native,
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
            rtrace::Error::Open { error, .. } | rtrace::Error::Io { error, .. } => {
                PyOSError::new_err((error.raw_os_error().unwrap_or(0), message))
            }
            rtrace::Error::Config(_) => PyValueError::new_err(message),
            _ => StreamError::new_err(message),
        }
    }
}
