//! Output formats of a merged timeline: a Perfetto trace (`perfetto`), the
//! format rtrace's timelines are made for, and Chrome trace JSON (`chrome`)
//! for other viewers. Both writers are `TimelineSink`s that write as the
//! merge drives them, never holding the trace in memory. `perfetto_read`
//! reads rtrace's Perfetto files back as events, so a merged timeline can be
//! iterated like a stream file, or `replay`ed into any other sink. Both
//! writers give viewers pids through `pids`, which keeps processes of
//! different hosts or containers with the same pid apart.

pub mod chrome;
pub mod perfetto;
pub mod perfetto_format;
pub mod perfetto_read;
pub mod pids;

pub use chrome::ChromeJsonWriter;
pub use perfetto::PerfettoWriter;
pub use perfetto_read::{replay, replay_with_progress, MergedEvent, MergedItem, MergedReader};
