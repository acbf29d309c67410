//! The core library's typed errors.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the core library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or created. (Here and in `Io`, the I/O
    /// error is in the message, not a `source()`: printed with its chain,
    /// as anyhow's `{:#}` does, it would otherwise be said twice.)
    #[error("cannot open {path}: {error}")]
    Open { path: PathBuf, error: io::Error },
    /// Reading or writing a stream failed.
    #[error("I/O error while {action}: {error}")]
    Io {
        action: &'static str,
        error: io::Error,
    },
    /// A peer kept quiet past a deadline (`why` says which: no hello in
    /// time, no heartbeat); the reader's own timeout, not an I/O failure.
    #[error("{what} {why}")]
    TimedOut { what: String, why: String },
    /// The file has no bytes at all (a collector still running writes its
    /// file a second or so behind the merge).
    #[error("{what} is empty: nothing has been written to it yet")]
    Empty { what: String },
    /// The input ended before its first byte: a connection opened and
    /// closed without sending anything (a probe, such as a second collector
    /// checking whether this one listens).
    #[error("{what} sent nothing before it closed")]
    Nothing { what: String },
    /// A merged timeline given where a stream is read.
    #[error(
        "{what} is a merged timeline, not a stream file: this reads stream files \
         (`rtrace export`, `rtrace stats`, `rtrace-collect stats` and `rtrace.read` read \
         timelines too)"
    )]
    Timeline { what: String },
    /// The input does not start with the rtrace magic.
    #[error("{what} is not an rtrace stream: it does not start with the \"RTRACE\" magic")]
    BadMagic { what: String },
    /// The input was written by a newer rtrace.
    #[error(
        "{what} uses rtrace format version {found}, but this rtrace reads versions up to {supported}; upgrade rtrace to read it"
    )]
    UnsupportedVersion {
        what: String,
        found: u32,
        supported: u32,
    },
    /// A frame announced a length above the reader's limit.
    #[error(
        "{what}: frame at byte {offset} announces {len} bytes, above the limit of {limit} bytes"
    )]
    FrameTooLarge {
        what: String,
        offset: u64,
        len: u64,
        limit: u64,
    },
    /// A frame could not be decoded or breaks the protocol's rules.
    #[error("{what}: malformed frame at byte {offset}: {reason}")]
    Malformed {
        what: String,
        offset: u64,
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Shorthand for results of the core library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
