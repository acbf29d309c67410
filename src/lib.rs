//! rtrace core: the clock, per-thread event buffers, the bounded queue, the
//! writer thread, the wire protocol and the stream reader. Language
//! front-ends (the Python extension, the native API) build on this crate;
//! it has no Python, no CLI and no global state besides the clock.
//!
//! Data flows one way: `buffer` → `queue` → `writer` → `sink`, and back in
//! through `read` (`input` reads stream files and merged timelines alike).
//! `native` is the Rust API for recording spans, instants, counters and
//! flows (`rtrace::span`, …) on top of it.

pub mod buffer;
pub mod clock;
pub mod clocksync;
mod error;
pub mod event;
pub mod export;
pub mod host;
pub mod idmap;
pub mod input;
pub mod mark;
pub mod merge;
pub mod native;
pub mod queue;
pub mod read;
pub mod recorder;
pub mod rxstamp;
pub mod sanitize;
pub mod sched;
pub mod sink;
pub mod terminate;
#[cfg(test)]
mod test_rand;
mod ticker;
pub mod timeline;
#[cfg(feature = "tracing")]
pub mod tracing_layer;
mod varint;
pub mod wire;
pub mod writer;

pub use buffer::ThreadBuffer;
pub use error::{Error, Result};
pub use event::{FunctionId, Kind, RawEvent};
pub use mark::{Arg, ArgRef, ArgValue, Mark};
pub use native::{
    counter, flow_in, flow_out, init, instant, instant_with, shutdown, span, span_with,
    thread_name, Span,
};
pub use queue::OnFull;
pub use read::{Chunk, Encoded, Event, EventReader, FrameReader, Plain, ReadAhead, StreamItem};
pub use recorder::{Config, Recorder, Stats};
pub use sink::{Address, Token};
pub use writer::FunctionInfo;
