//! rtrace-collect: the collector. It accepts the streams of many recorded
//! processes (`live`), or reads stream files (`offline`), merges them by
//! timestamp (`rtrace::merge`) and writes one timeline (`output`).
//! `summary` and `profile` report on recorded files (`stats`). `priority`
//! raises the merge thread's. `status` is the line that shows progress on a
//! terminal. `stop` is Ctrl-C, which wakes the loop waiting for it. `cli` is the command line; `main.rs` only calls it.

pub mod access;
pub mod cli;
pub mod clocksync;
pub mod handshake;
pub mod heap;
pub mod ingest;
pub mod live;
pub mod offline;
pub mod output;
pub mod priority;
pub mod profile;
pub mod relay;
pub mod report;
pub mod status;
pub mod stop;
pub mod summary;

pub use summary::{summarize_file, table, StreamSummary};
