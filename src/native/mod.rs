//! The native API: Rust programs (and, through `rtrace-capi`, C and C++
//! programs) record spans, instants, counters and flow arrows into the same
//! per-thread buffers, queue, writer, clock and wire protocol as the Python
//! recorder, so they land on the same timeline.
//!
//! ```no_run
//! rtrace::init("svc-c").unwrap();            // or rtrace::native::Options
//! {
//!     let _span = rtrace::span("handle");
//!     rtrace::counter("queue_depth", 3.0);
//!     let token = rtrace::flow_out();        // put it into the message
//!     # let _ = token;
//! }
//! rtrace::shutdown();                        // also runs at process exit
//! ```
//!
//! One recording per process, shared by all threads. Every function is
//! cheap and silent while nothing records. Threads hand their events over
//! when their buffer fills, after the flush interval, at thread exit and at
//! `shutdown`, which also ends spans still open. Not fork-safe: a child
//! made by `fork()` records nothing and never touches its parent's stream.

mod args;
mod error;
pub(crate) mod local;
mod session;

pub use error::{Error, Result};
pub use session::{is_recording, report_once, Options, Started};

use std::marker::PhantomData;

use crate::event::Kind;
use crate::mark::{token, ArgRef, FlowIds, Payload};
use crate::recorder::Stats;

/// Default name of the instant recorded by `flow_out`.
pub const FLOW_OUT_NAME: &str = "send";
/// Default name of the instant recorded by `flow_in`.
pub const FLOW_IN_NAME: &str = "receive";

/// Starts recording this process as `session` (collector from
/// `$RTRACE_COLLECTOR`, else a stream file; see `Options` for the rest).
pub fn init(session: &str) -> Result<Started> {
    Options::new().session(session).start()
}

/// Stops recording: ends spans still open in every thread, writes all
/// events and the end marker. Returns the recording's counters, or `None`
/// when nothing was recording. Runs by itself at process exit.
pub fn shutdown() -> Option<Stats> {
    session::stop()
}

/// A span that ends when dropped (see `span`). Stays on its thread.
#[must_use = "the span ends when this guard is dropped"]
pub struct Span {
    generation: u64,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Span {
    fn drop(&mut self) {
        if self.generation != 0 {
            local::with(|b| {
                // A span begun under an earlier recording was ended by its
                // shutdown.
                if b.generation() == self.generation {
                    let _ = b.end();
                }
            });
        }
    }
}

/// Begins a span named `name` on this thread; it ends when the guard drops.
#[inline]
pub fn span(name: &str) -> Span {
    span_with(name, &[])
}

/// `span` with arguments, shown with the span in the viewer.
#[inline]
pub fn span_with(name: &str, args: &[(&str, ArgRef<'_>)]) -> Span {
    Span {
        generation: begin_with(name, args),
        _not_send: PhantomData,
    }
}

/// Begins a span that the next `end()` on this thread ends. Returns the
/// recording's generation (0: nothing is recording).
#[inline]
pub fn begin(name: &str) -> u64 {
    begin_with(name, &[])
}

/// `begin` with arguments.
#[inline]
pub fn begin_with(name: &str, args: &[(&str, ArgRef<'_>)]) -> u64 {
    local::with(|b| {
        let Some(id) = b.name(name) else { return 0 };
        let pushed = b.push(id, Kind::SpanBegin, payload(0, 0.0, args).as_ref());
        if pushed {
            b.generation()
        } else {
            0
        }
    })
    .unwrap_or(0)
}

/// Ends the innermost span open on this thread.
#[inline]
pub fn end() -> Result<()> {
    local::with(|b| b.end()).unwrap_or(Ok(()))
}

/// Records an instant named `name`.
#[inline]
pub fn instant(name: &str) {
    instant_with(name, &[]);
}

/// `instant` with arguments.
#[inline]
pub fn instant_with(name: &str, args: &[(&str, ArgRef<'_>)]) {
    mark(name, Kind::Instant, || payload(0, 0.0, args));
}

/// Records a counter's new value (a counter track named `name`).
#[inline]
pub fn counter(name: &str, value: f64) {
    mark(name, Kind::Counter, || Some(Payload::new(0, value)));
}

/// Records the sending end of a flow arrow (an instant named `send`, as in Python)
/// and returns its token, a W3C `traceparent` value, to put into the
/// message. While nothing records, returns a valid token nothing refers to.
pub fn flow_out() -> String {
    flow_out_named(FLOW_OUT_NAME)
}

/// `flow_out` with the instant named `name`.
pub fn flow_out_named(name: &str) -> String {
    let recorded = local::with(|b| {
        let id = b.name(name)?;
        let (flow, token) = b.new_flow();
        b.push(id, Kind::FlowOut, Some(&Payload::new(flow, 0.0)))
            .then_some(token)
    })
    .flatten();
    recorded.unwrap_or_else(unrecorded_token)
}

/// Records the receiving end of the flow whose token (from `flow_out`, in
/// this or another process) arrived with a message.
pub fn flow_in(token: &str) -> Result<()> {
    flow_in_named(token, FLOW_IN_NAME)
}

/// `flow_in` with the instant named `name`.
pub fn flow_in_named(token: &str, name: &str) -> Result<()> {
    let (_, flow) = token::parse(token).map_err(Error::BadToken)?;
    mark(name, Kind::FlowIn, || Some(Payload::new(flow, 0.0)));
    Ok(())
}

/// Names this thread in the timeline (kept for later recordings too).
pub fn thread_name(name: &str) {
    local::set_thread_name(name);
}

/// Records a mark; its payload is built only while recording.
#[inline]
fn mark(name: &str, kind: Kind, payload: impl FnOnce() -> Option<Payload>) {
    local::with(|b| {
        if let Some(id) = b.name(name) {
            b.push(id, kind, payload().as_ref());
        }
    });
}

/// Counters of the active recording (events written, lost, bytes).
pub fn stats() -> Option<Stats> {
    session::stats()
}

/// The payload for a mark, `None` when it carries nothing (no 1 KiB
/// payload is built for the plain span or instant).
#[inline]
fn payload(flow: u64, value: f64, args: &[(&str, ArgRef<'_>)]) -> Option<Payload> {
    if args.is_empty() && flow == 0 && value == 0.0 {
        return None;
    }
    let mut payload = Payload::new(flow, value);
    for (key, value) in args {
        if !payload.arg(key, *value) {
            break;
        }
    }
    Some(payload)
}

fn unrecorded_token() -> String {
    static IDS: std::sync::OnceLock<FlowIds> = std::sync::OnceLock::new();
    let ids = IDS.get_or_init(FlowIds::new);
    token::format(ids.trace_id(), ids.next())
}
