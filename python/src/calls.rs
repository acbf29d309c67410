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
//! Not recorded, with their stack entry:
//! - `EXCLUDED` functions; what they call is recorded, nested under the
//!   nearest recorded caller;
//! - calls deeper than `max_depth` recorded calls, and top-level calls left
//!   out by `sample`: as `SUPPRESSED`, with everything they call.

use rtrace::{FunctionId, Kind, RawEvent, ThreadBuffer};

use crate::filter::{Filters, ARGS_BIT, EXCLUDED};
use crate::hook::{CCallable, Session, SlotState, C_BIT, SUPPRESSED};

/// The recorded calls open on a thread, outermost first.
#[derive(Debug, Default)]
pub struct OpenCalls {
    calls: Vec<OpenCall>,
    /// `calls[..written]` have had their call event written to the buffer.
    written: usize,
}

#[derive(Debug)]
struct OpenCall {
    ticks: u64,
    /// Function id, with `C_BIT` for a C function.
    code: u32,
}

impl OpenCall {
    fn event(&self) -> RawEvent {
        let kind = if self.code & C_BIT != 0 {
            Kind::CCall
        } else {
            Kind::Call
        };
        RawEvent::new(self.ticks, FunctionId(self.code & !C_BIT), kind, 0)
    }
}

/// Appends an event, handing the buffer over when it asks.
fn push(session: &Session, buf: &mut ThreadBuffer, event: RawEvent) {
    if buf.push(event) {
        session.recorder.hand_over(buf);
    }
}

/// Writes the call events of `calls[written..upto]`.
fn write_calls(session: &Session, state: &mut SlotState, upto: usize) {
    let open = &mut state.calls;
    for call in &open.calls[open.written..upto] {
        push(session, &mut state.buf, call.event());
    }
    open.written = open.written.max(upto);
}

/// Writes the calls that have lasted `min_duration` by `t` (all of them
/// when it is 0): they will be kept whenever they return.
#[inline]
fn promote(session: &Session, filters: &Filters, state: &mut SlotState, t: u64) {
    let open = &state.calls;
    let mut upto = open.written;
    while let Some(call) = open.calls.get(upto) {
        if t.wrapping_sub(call.ticks) < filters.min_ticks {
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
fn admit(filters: &Filters, state: &mut SlotState, id: FunctionId, c_bit: u32) -> bool {
    if id == SUPPRESSED || state.suppressed > 0 {
        state.suppress(c_bit);
        return false;
    }
    if id == EXCLUDED {
        state.stack.push(EXCLUDED.0 | c_bit);
        return false;
    }
    let depth = state.calls.calls.len();
    let sampled_out =
        depth == 0 && filters.sample.every > 1 && (c_bit != 0 || !filters.sample.keep());
    if depth >= filters.max_depth || sampled_out {
        state.suppress(c_bit);
        return false;
    }
    true
}

/// Opens a recorded call.
fn open(session: &Session, filters: &Filters, state: &mut SlotState, code: u32, t: u64) {
    state.stack.push(code);
    state.calls.calls.push(OpenCall {
        ticks: t,
        code: code & !ARGS_BIT,
    });
    promote(session, filters, state, t);
}

/// Closes the stack entry `top` at `t` with a return of `kind`.
fn close(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    top: u32,
    kind: Kind,
    t: u64,
) {
    let id = FunctionId(top & !(C_BIT | ARGS_BIT));
    if id == SUPPRESSED {
        state.suppressed = state.suppressed.saturating_sub(1);
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
    } else if t.wrapping_sub(call.ticks) >= filters.min_ticks {
        // Long enough: its callers first (they are older and longer).
        write_calls(session, state, i);
        push(session, &mut state.buf, call.event());
    } else {
        return;
    }
    push(session, &mut state.buf, RawEvent::new(t, id, kind, 0));
}

/// A Python function started or resumed (`id` from its code object).
pub fn on_call(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    id: FunctionId,
    t: u64,
) {
    let plain = FunctionId(id.0 & !ARGS_BIT);
    if admit(filters, state, plain, 0) {
        open(session, filters, state, id.0, t);
    }
}

/// A Python function returned (or was left by an exception): closes it,
/// and first the C calls left open above it.
pub fn on_return(session: &Session, filters: &Filters, state: &mut SlotState, kind: Kind, t: u64) {
    promote(session, filters, state, t);
    while let Some(top) = state.stack.pop() {
        let is_c = top & C_BIT != 0;
        close(
            session,
            filters,
            state,
            top,
            if is_c { Kind::CReturn } else { kind },
            t,
        );
        if !is_c {
            return;
        }
    }
}

/// A C function is about to be called.
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
        open(session, filters, state, id.0 | C_BIT, t);
    }
}

/// A C function returned or raised; ignored unless a C call is open.
pub fn on_c_return(session: &Session, filters: &Filters, state: &mut SlotState, t: u64) {
    let Some(&top) = state.stack.last() else {
        return;
    };
    if top & C_BIT == 0 {
        return;
    }
    state.stack.pop();
    promote(session, filters, state, t);
    close(session, filters, state, top, Kind::CReturn, t);
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
    push(
        session,
        &mut state.buf,
        RawEvent::new(t, id, Kind::Line, line),
    );
}

/// Closes every call still open at `t` (at stop).
pub fn close_open_calls(session: &Session, filters: &Filters, state: &mut SlotState, t: u64) {
    while let Some(top) = state.stack.pop() {
        let kind = if top & C_BIT != 0 {
            Kind::CReturn
        } else {
            Kind::Return
        };
        close(session, filters, state, top, kind, t);
    }
}
