//! Errors of the native API.

/// What the native API (`rtrace::init`, `rtrace::end`, `rtrace::flow_in`, …)
/// can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `init` while a recording is active in this process.
    #[error(
        "rtrace is already recording session {session:?} to {target}; call rtrace::shutdown() first (one recording per process)"
    )]
    AlreadyRecording { session: String, target: String },
    /// `end` on a thread with no open span.
    #[error("end() without a matching begin() on this thread; ignored")]
    Unbalanced,
    /// `flow_in` got something that is not a flow token.
    #[error("{0}")]
    BadToken(String),
    /// The recorder could not start (bad address, unwritable file, …).
    #[error(transparent)]
    Core(#[from] crate::Error),
}

/// Shorthand for results of the native API.
pub type Result<T, E = Error> = std::result::Result<T, E>;
