//! The hook's filtered path: what a recording with filters (`filter`)
//! does per event instead of the plain path in `hook`.
//!
//! Every open call still has its entry on the thread's stack (`SlotState::
//! stack`), recorded or not, so returns always find their call. Calls that
//! are recorded also have an `OpenCall` here, with their start time: with
//! `min_duration`, a call's event waits here until it has lasted long
//! enough, then goes to the buffer together with its callers' (which have
//! lasted at least as long); a call that returns sooner is dropped, its
//! time staying inside its caller's slice. Calls waiting here always come
//! after the ones already written, so the thread's events stay in time
//! order and well nested.
//!
//! The entry points are never inlined into the hook's: the plain path's
//! code stays as it was without filters.
//!
//! With `log_args`, a call of a chosen function waits here (`awaiting`)
//! until the hook has made the text of its arguments (`args::Ask`), and a
//! return asks for its value's text before anything is done.
//!
//! Not recorded, with their stack entry:
//! - `EXCLUDED` functions; what they call is recorded, nested under the
//!   nearest recorded caller;
//! - calls deeper than `max_depth` recorded calls, and top-level calls left
//!   out by `sample`: as `SUPPRESSED`, with everything they call.

use pyo3::ffi;
use rtrace::{FunctionId, Kind, RawEvent, ThreadBuffer};

use crate::args::Ask;
use crate::filter::{Filters, ARGS_BIT, EXCLUDED};
use crate::hook::{CCallable, Session, SlotState, C_BIT, SUPPRESSED};

/// The recorded calls open on a thread, outermost first.
#[derive(Debug, Default)]
pub struct OpenCalls {
    calls: Vec<OpenCall>,
    /// `calls[..written]` have had their call event written to the buffer.
    written: usize,
    /// `log_args`: the texts of calls not written yet, by index in `calls`
    /// (rarely more than one; kept apart so that `OpenCall` stays small).
    texts: Vec<(usize, String)>,
    /// `log_args`: the time of a return waiting for its value's text (0:
    /// none). Making the text runs Python, which may let other threads,
    /// and the writer's tick, run before the return is recorded.
    returning: u64,
}

#[derive(Debug, Clone, Copy)]
struct OpenCall {
    ticks: u64,
    /// Function id, with `C_BIT` for a C function.
    code: u32,
    /// `log_args`: the text is being made; nothing after it is written.
    awaiting: bool,
}

impl OpenCall {
    #[inline]
    fn event(&self) -> RawEvent {
        let kind = if self.code & C_BIT != 0 {
            Kind::CCall
        } else {
            Kind::Call
        };
        RawEvent::new(self.ticks, FunctionId(self.code & !C_BIT), kind, 0)
    }
}

impl OpenCalls {
    /// The time of the oldest event stamped here but not yet in the
    /// thread's buffer: a call waiting to last long enough or for its
    /// text, or a return waiting for its text. `None`: there is none.
    pub fn unwritten_since(&self) -> Option<u64> {
        let call = self.calls.get(self.written).map(|c| c.ticks);
        let returning = (self.returning != 0).then_some(self.returning);
        match (call, returning) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The text of `calls[i]`, taken out.
    fn take_text(&mut self, i: usize) -> Option<String> {
        if self.texts.is_empty() {
            return None;
        }
        let at = self.texts.iter().position(|(j, _)| *j == i)?;
        Some(self.texts.swap_remove(at).1)
    }
}

/// Appends an event (with its text), handing the buffer over when it asks.
#[inline]
fn push(session: &Session, buf: &mut ThreadBuffer, event: RawEvent, text: Option<String>) {
    let full = match text {
        Some(text) => buf.push_with_text(event, text),
        None => buf.push(event),
    };
    if full {
        session.recorder.hand_over(buf);
    }
}

/// Writes the call events of `calls[written..upto]`.
fn write_calls(session: &Session, state: &mut SlotState, upto: usize) {
    let open = &mut state.calls;
    for i in open.written.min(upto)..upto {
        let text = open.take_text(i);
        push(session, &mut state.buf, open.calls[i].event(), text);
    }
    open.written = open.written.max(upto);
}

/// Before a user event (`hook::record_mark`): writes the calls still
/// waiting for `min_duration` (up to the first awaiting its text), so that
/// the thread's events stay in time order. A call that contains a user
/// event is kept, however short.
pub fn write_pending(session: &Session, state: &mut SlotState) {
    let open = &state.calls;
    let upto = (open.calls.iter())
        .position(|call| call.awaiting)
        .unwrap_or(open.calls.len());
    if upto > open.written {
        write_calls(session, state, upto);
    }
}

/// Writes the calls that have lasted `min_duration` by `t` (all of them
/// when it is 0), up to the first still awaiting its text: they will be
/// kept whenever they return.
#[inline]
fn promote(session: &Session, filters: &Filters, state: &mut SlotState, t: u64) {
    let open = &state.calls;
    let mut upto = open.written;
    while let Some(call) = open.calls.get(upto) {
        if call.awaiting || t.wrapping_sub(call.ticks) < filters.min_ticks {
            break;
        }
        upto += 1;
    }
    if upto > open.written {
        write_calls(session, state, upto);
    }
}

/// Pushes the stack entry of a call that is not to be recorded and
/// returns false; true when the call is to be recorded.
#[inline]
fn admit(filters: &Filters, state: &mut SlotState, id: FunctionId, c_bit: u32) -> bool {
    if id == EXCLUDED && state.suppressed == 0 {
        state.stack.push(EXCLUDED.0 | c_bit);
        return false;
    }
    if id == SUPPRESSED || state.suppressed > 0 {
        state.suppress(c_bit);
        return false;
    }
    let depth = state.calls.calls.len();
    let sampled_out =
        depth == 0 && filters.sample.every > 1 && (c_bit != 0 || !filters.sample.keep());
    if sampled_out && c_bit == 0 {
        // A request left out: its user events go with it.
        state.sampling.quiet_from = Some(state.stack.len());
    }
    if depth >= filters.max_depth || sampled_out {
        state.suppress(c_bit);
        return false;
    }
    true
}

/// A thread's state for sampling user events (`sample`).
#[derive(Debug, Default)]
pub struct Sampling {
    /// Where on the stack the top-level call left out by `sample` is, while
    /// it runs: user events inside it are left out too.
    pub quiet_from: Option<usize>,
    /// Recorded spans open on this thread.
    spans: u32,
    /// Spans open inside a top-level span left out by `sample` (it
    /// included): while above zero, nothing is recorded.
    skipped_spans: u32,
}

/// What to do with a user event (`admit_mark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkFate {
    Record,
    /// Left out; for a span begin: its end must come too (it is counted).
    Taken,
    /// Left out, not counted (its span's end need not come).
    Dropped,
}

/// Whether to record a user event of `kind`; with `sample`, top-level spans
/// (no other span open on their thread) are requests too: one in `sample`
/// is recorded, with everything inside it, the others left out whole.
pub fn admit_mark(filters: &Filters, state: &mut SlotState, kind: Kind) -> MarkFate {
    if filters.sample.every <= 1 {
        return MarkFate::Record;
    }
    let sampling = &mut state.sampling;
    if sampling.quiet_from.is_some() {
        return MarkFate::Dropped;
    }
    match kind {
        Kind::SpanBegin if sampling.skipped_spans > 0 => {
            sampling.skipped_spans += 1;
            MarkFate::Taken
        }
        Kind::SpanBegin if sampling.spans == 0 && !filters.span_sample.keep() => {
            sampling.skipped_spans = 1;
            // What the span's body calls is left out with it.
            state.suppressed += 1;
            MarkFate::Taken
        }
        Kind::SpanBegin => {
            sampling.spans += 1;
            MarkFate::Record
        }
        Kind::SpanEnd if sampling.skipped_spans > 0 => {
            sampling.skipped_spans -= 1;
            if sampling.skipped_spans == 0 {
                state.suppressed = state.suppressed.saturating_sub(1);
            }
            MarkFate::Dropped
        }
        Kind::SpanEnd => {
            sampling.spans = sampling.spans.saturating_sub(1);
            MarkFate::Record
        }
        _ if sampling.skipped_spans > 0 => MarkFate::Dropped,
        _ => MarkFate::Record,
    }
}

/// Opens a recorded call; with `ARGS_BIT`, asks for its arguments' text.
#[inline]
fn open(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    code: u32,
    t: u64,
) -> Option<Ask> {
    state.stack.push(code);
    let ask = if code & ARGS_BIT != 0 {
        Ask::new(session, filters)
    } else {
        None
    };
    let call = OpenCall {
        ticks: t,
        code: code & !ARGS_BIT,
        awaiting: ask.is_some(),
    };
    let open = &mut state.calls;
    if filters.min_ticks == 0 && ask.is_none() && open.written == open.calls.len() {
        // Nothing waits: written at once (what `promote` would do).
        open.calls.push(call);
        open.written += 1;
        push(session, &mut state.buf, call.event(), None);
        return None;
    }
    open.calls.push(call);
    promote(session, filters, state, t);
    ask
}

/// Closes the stack entry `top` at `t` with a return of `kind` carrying
/// `text`.
#[inline]
fn close(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    top: u32,
    (kind, t): (Kind, u64),
    text: Option<String>,
) {
    let id = FunctionId(top & !(C_BIT | ARGS_BIT));
    if id == SUPPRESSED {
        state.end_suppressed();
        return;
    }
    if id == EXCLUDED {
        return;
    }
    let Some(call) = state.calls.calls.pop() else {
        return;
    };
    let i = state.calls.calls.len();
    if i < state.calls.written {
        state.calls.written = i;
    } else {
        let call_text = state.calls.take_text(i);
        if t.wrapping_sub(call.ticks) < filters.min_ticks {
            return;
        }
        // Long enough: its callers first (they are older and longer).
        write_calls(session, state, i);
        push(session, &mut state.buf, call.event(), call_text);
    }
    push(session, &mut state.buf, RawEvent::new(t, id, kind, 0), text);
}

/// A Python function started or resumed (`id` from its code object).
/// Returns what the hook must make before the call can be written.
#[inline(never)]
#[must_use]
pub fn on_call(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    id: FunctionId,
    t: u64,
) -> Option<Ask> {
    let plain = FunctionId(id.0 & !ARGS_BIT);
    if admit(filters, state, plain, 0) {
        open(session, filters, state, id.0, t)
    } else {
        None
    }
}

/// The text asked for by `on_call` (`None`: there is none), for the
/// innermost call; `t` is now.
pub fn set_call_text(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    text: Option<String>,
    t: u64,
) {
    let open = &mut state.calls;
    let last = open.calls.len().wrapping_sub(1);
    if let Some(call) = open.calls.get_mut(last).filter(|c| c.awaiting) {
        call.awaiting = false;
        if let Some(text) = text {
            open.texts.push((last, text));
        }
    }
    promote(session, filters, state, t);
}

/// A Python function returned `value` (NULL: unknown) or was left by an
/// exception: closes it, and first the C calls left open above it. When
/// its return value is to be logged and `text` is `None`, changes nothing
/// and asks for the text instead: call again with it.
#[inline(never)]
#[must_use]
pub fn on_return(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    (kind, t): (Kind, u64),
    value: *mut ffi::PyObject,
    text: Option<String>,
) -> Option<Ask> {
    // The common cases first: the function returning was left out.
    match state.stack.last() {
        Some(&top) if top == EXCLUDED.0 => {
            state.stack.pop();
            return None;
        }
        Some(&top) if top == SUPPRESSED.0 => {
            state.stack.pop();
            state.end_suppressed();
            return None;
        }
        None => return None,
        _ => {}
    }
    let logged = text.is_none() && filters.repr.is_some() && kind == Kind::Return;
    if logged && !value.is_null() && logs_return(state) {
        let ask = Ask::new(session, filters);
        if ask.is_some() {
            state.calls.returning = t;
        }
        return ask;
    }
    state.calls.returning = 0;
    close_python(session, filters, state, (kind, t), text);
    None
}

/// Closes the innermost Python call, and first the C calls left open
/// above it.
fn close_python(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    (kind, t): (Kind, u64),
    mut text: Option<String>,
) {
    promote(session, filters, state, t);
    while let Some(top) = state.stack.pop() {
        let is_c = top & C_BIT != 0;
        let (kind, text) = if is_c {
            (Kind::CReturn, None)
        } else {
            (kind, text.take())
        };
        close(session, filters, state, top, (kind, t), text);
        if !is_c {
            break;
        }
    }
}

/// True when the innermost Python call on the stack logs its return value.
fn logs_return(state: &SlotState) -> bool {
    let python = state.stack.iter().rev().find(|&&e| e & C_BIT == 0);
    python.is_some_and(|&e| e & ARGS_BIT != 0)
}

/// A C function is about to be called.
#[inline(never)]
pub fn on_c_call(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    callable: CCallable,
    t: u64,
) {
    let id = if state.suppressed > 0 {
        SUPPRESSED
    } else {
        session.c_function_id(callable)
    };
    if admit(filters, state, id, C_BIT) {
        // C functions never have ARGS_BIT: nothing to ask.
        let _ = open(session, filters, state, id.0 | C_BIT, t);
    }
}

/// A C function returned or raised; ignored unless a C call is open.
#[inline(never)]
pub fn on_c_return(session: &Session, filters: &Filters, state: &mut SlotState, t: u64) {
    let Some(&top) = state.stack.last() else {
        return;
    };
    if top & C_BIT == 0 {
        return;
    }
    state.stack.pop();
    if top & !C_BIT == EXCLUDED.0 {
        return;
    }
    promote(session, filters, state, t);
    close(session, filters, state, top, (Kind::CReturn, t), None);
}

/// A line of the function `id` is about to run. (`min_duration` and
/// `lines` do not go together, so every open call is already written.)
pub fn on_line(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    id: FunctionId,
    line: u32,
    t: u64,
) {
    let id = FunctionId(id.0 & !ARGS_BIT);
    if id == SUPPRESSED || id == EXCLUDED || state.suppressed > 0 {
        return;
    }
    promote(session, filters, state, t);
    let event = RawEvent::new(t, id, Kind::Line, line);
    push(session, &mut state.buf, event, None);
}

/// Closes every call still open at `t` (at stop).
pub fn close_open_calls(session: &Session, filters: &Filters, state: &mut SlotState, t: u64) {
    while let Some(top) = state.stack.pop() {
        let kind = if top & C_BIT != 0 {
            Kind::CReturn
        } else {
            Kind::Return
        };
        close(session, filters, state, top, (kind, t), None);
    }
}
