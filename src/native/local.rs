//! Per-thread state of the native API: the thread's buffer and open-span
//! stack (its `Slot`), and a cache of interned names, bound to the active
//! recording on the thread's first event.
//!
//! The hot path: an atomic load (is a recording active, and is it the one
//! this thread is bound to?), a thread-local access, a hash lookup of the
//! name in the thread's own cache, the slot's lock (uncontended: only
//! `shutdown` and the writer's flush tick take it from another thread), a
//! counter read and a 16-byte store. The counter is read holding the lock:
//! that is what lets the tick promise completeness (`Session::sweep`).
//! The global lock is taken only when a thread binds to a recording, and
//! the recorder's name table only on a name's first use in a thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::session::{self, lock, Session};
use super::Error;
use crate::buffer::ThreadBuffer;
use crate::clock;
use crate::event::{FunctionId, Kind};
use crate::mark::Payload;
use crate::recorder::Recorder;

/// A thread's events and open spans; shared with the session so that
/// `shutdown` can close and hand over what a live thread holds.
pub(super) struct Slot {
    state: Mutex<SlotState>,
}

struct SlotState {
    /// `None` once closed (by `shutdown` or at thread exit).
    buf: Option<ThreadBuffer>,
    /// Names of the open spans, innermost last.
    stack: Vec<FunctionId>,
}

impl Slot {
    /// Ends the open spans at `ticks`, hands the buffer over and closes the
    /// slot; later events of its thread are not recorded into it.
    pub fn close(&self, recorder: &Recorder, ticks: u64) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if let Some(mut buf) = state.buf.take() {
            while let Some(name) = state.stack.pop() {
                recorder.push_mark(&mut buf, ticks, name, Kind::SpanEnd, None);
            }
            recorder.hand_over(&mut buf);
        }
    }

    /// Offers the thread's waiting events to the writer, never waiting
    /// for room (see `Recorder::offer`); false if some found none.
    pub fn offer(&self, recorder: &Recorder) -> bool {
        match lock(&self.state).buf.as_mut() {
            Some(buf) if !buf.events.is_empty() => recorder.offer(buf),
            _ => true,
        }
    }
}

/// FxHash (rustc's): a multiply and rotate per word, far cheaper than the
/// default SipHash for the short names this cache holds.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type NameCache = HashMap<Box<str>, FunctionId, BuildHasherDefault<FxHasher>>;

/// A thread bound to one recording.
pub(super) struct Bound {
    generation: u64,
    session: Arc<Session>,
    slot: Arc<Slot>,
    tid: u64,
    names: NameCache,
}

impl Drop for Bound {
    /// At thread exit (or when the thread binds to a newer recording):
    /// ends its open spans and hands its events over.
    fn drop(&mut self) {
        self.slot.close(&self.session.recorder, clock::ticks());
    }
}

thread_local! {
    static BOUND: RefCell<Option<Bound>> = const { RefCell::new(None) };
    /// The name given with `thread_name`, kept across recordings.
    static NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's state if a recording is active; `None` when
/// none is (or during thread teardown, or re-entered from `f`).
#[inline]
pub(super) fn with<R>(f: impl FnOnce(&mut Bound) -> R) -> Option<R> {
    let generation = session::active_generation();
    if generation == 0 {
        return None;
    }
    BOUND
        .try_with(|cell| {
            let mut bound = cell.try_borrow_mut().ok()?;
            if bound.as_ref().map(|b| b.generation) != Some(generation) {
                // Drop the old binding first: its events go to its recording.
                *bound = None;
                *bound = bind(generation);
            }
            bound.as_mut().map(f)
        })
        .ok()
        .flatten()
}

/// Binds this thread to recording `generation` (if it is still active).
fn bind(generation: u64) -> Option<Bound> {
    let session = session::session(generation)?;
    let tid = crate::sched::current_tid();
    let slot = Arc::new(Slot {
        state: Mutex::new(SlotState {
            buf: Some(session.recorder.new_thread_buffer(tid)),
            stack: Vec::new(),
        }),
    });
    if !session.register(&slot) {
        return None;
    }
    if let Some(name) = thread_name_now() {
        session.recorder.name_thread(tid, name);
    }
    Some(Bound {
        generation,
        session,
        slot,
        tid,
        names: NameCache::default(),
    })
}

impl Bound {
    /// The generation of the recording this thread is bound to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The id of `name` in this recording (cached per thread).
    #[inline]
    pub fn name(&mut self, name: &str) -> Option<FunctionId> {
        if let Some(&id) = self.names.get(name) {
            return Some(id);
        }
        let id = self.session.recorder.intern_name(name)?;
        self.names.insert(name.into(), id);
        Some(id)
    }

    /// Records a mark of `kind` now; a `SpanBegin` is pushed on the
    /// thread's span stack. False when the slot was closed by `shutdown`.
    #[inline]
    pub fn push(&mut self, name: FunctionId, kind: Kind, payload: Option<&Payload>) -> bool {
        let mut state = lock(&self.slot.state);
        let state = &mut *state;
        let Some(buf) = state.buf.as_mut() else {
            return false;
        };
        if kind == Kind::SpanBegin {
            state.stack.push(name);
        }
        let ticks = clock::ticks();
        self.session
            .recorder
            .push_mark(buf, ticks, name, kind, payload);
        true
    }

    /// Ends the innermost open span of this thread.
    #[inline]
    pub fn end(&mut self) -> Result<(), Error> {
        let mut state = lock(&self.slot.state);
        let state = &mut *state;
        let Some(buf) = state.buf.as_mut() else {
            return Ok(());
        };
        let Some(name) = state.stack.pop() else {
            return Err(Error::Unbalanced);
        };
        let ticks = clock::ticks();
        self.session
            .recorder
            .push_mark(buf, ticks, name, Kind::SpanEnd, None);
        Ok(())
    }

    /// A fresh flow id and its token, from this recording.
    pub fn new_flow(&self) -> (u64, String) {
        self.session.recorder.new_flow()
    }

    /// Names this thread in the recording.
    pub fn name_thread(&self, name: String) {
        self.session.recorder.name_thread(self.tid, name);
    }
}

/// Remembers this thread's name and, when recording, records it.
pub(super) fn set_thread_name(name: &str) {
    let _ = NAME.try_with(|n| {
        if let Ok(mut n) = n.try_borrow_mut() {
            *n = Some(name.to_owned());
        }
    });
    with(|bound| bound.name_thread(name.to_owned()));
}

/// The name to give this thread when it binds: the one set with
/// `thread_name`, else Rust's thread name, else the OS's (`comm`).
fn thread_name_now() -> Option<String> {
    let given = NAME
        .try_with(|n| n.try_borrow().ok().and_then(|n| n.clone()))
        .ok()
        .flatten();
    given
        .or_else(|| std::thread::current().name().map(str::to_owned))
        .or_else(|| {
            std::fs::read_to_string("/proc/thread-self/comm")
                .ok()
                .map(|s| s.trim_end().to_owned())
        })
        .filter(|s| !s.is_empty())
}
