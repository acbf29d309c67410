//! A thread's event buffer: a fixed-capacity array the hook appends to with
//! no allocation, no lock and no syscall. When it is full, or its oldest
//! event is older than the flush interval, the hook hands it to the queue.

use crate::event::{FunctionId, Kind, RawEvent};
use crate::mark::{self, Payload};

/// Events of one thread waiting to be handed to the writer.
#[derive(Debug)]
pub struct ThreadBuffer {
    pub(crate) events: Vec<RawEvent>,
    /// OS thread id the events belong to.
    pub tid: u64,
    /// Events of this thread dropped since its last delivered batch.
    pub(crate) lost: u64,
    /// Of `events`, how many are mark payload slots rather than events.
    pub(crate) payload_slots: usize,
    /// Texts of the events that carry one (`push_with_text`).
    pub(crate) texts: Vec<String>,
    first_ticks: u64,
    max_age_ticks: u64,
}

impl ThreadBuffer {
    /// A buffer over `events` (emptied; its capacity is the buffer's size).
    pub fn new(tid: u64, mut events: Vec<RawEvent>, max_age_ticks: u64) -> ThreadBuffer {
        events.clear();
        ThreadBuffer {
            events,
            tid,
            lost: 0,
            payload_slots: 0,
            texts: Vec::new(),
            first_ticks: 0,
            max_age_ticks,
        }
    }

    /// Appends an event. Returns true when the buffer should be handed over
    /// now: it is full, or it has held events for longer than the flush
    /// interval. Never reallocates: callers hand over when told to.
    #[inline]
    pub fn push(&mut self, event: RawEvent) -> bool {
        if self.events.is_empty() {
            self.first_ticks = event.ticks;
        }
        self.events.push(event);
        self.events.len() >= self.events.capacity()
            || event.ticks.wrapping_sub(self.first_ticks) > self.max_age_ticks
    }

    /// Appends an event if that leaves no hand-over to do (room after it,
    /// and its buffer not older than the flush interval); otherwise
    /// appends nothing and returns false: then `push` it, and hand over
    /// when told to. For a hot path that must make no call.
    #[inline(always)]
    pub fn try_push(&mut self, event: RawEvent) -> bool {
        let len = self.events.len();
        if len + 1 >= self.events.capacity()
            || (len > 0 && event.ticks.wrapping_sub(self.first_ticks) > self.max_age_ticks)
        {
            return false;
        }
        if len == 0 {
            self.first_ticks = event.ticks;
        }
        self.events.push(event);
        true
    }

    /// Appends a mark (see `mark`): its event, then its payload's slots.
    /// Returns `None`, appending nothing, when the buffer has no room for
    /// it: hand over and push again (an empty buffer always has room).
    /// Otherwise returns whether to hand over now, as `push` does.
    pub fn push_mark(
        &mut self,
        ticks: u64,
        name: FunctionId,
        kind: Kind,
        payload: Option<&Payload>,
    ) -> Option<bool> {
        let slots = match payload {
            Some(p) if kind.has_payload() => p.slots(),
            _ => 0,
        };
        if self.events.len() + 1 + slots > self.events.capacity() {
            if self.events.is_empty() {
                // Too small a buffer for this payload: keep the event.
                return Some(self.push(mark::mark_event(ticks, name, kind, 0)));
            }
            return None;
        }
        let full = self.push(mark::mark_event(ticks, name, kind, slots));
        if let Some(payload) = payload.filter(|_| slots > 0) {
            payload.write_slots(&mut self.events);
            self.payload_slots += slots;
        }
        Some(full || self.events.len() >= self.events.capacity())
    }

    /// Appends a call or return event carrying a text (the reprs of a
    /// call's arguments, of a return value): the event's `line` refers to
    /// it (1-based index into `texts`). Returns what `push` returns.
    pub fn push_with_text(&mut self, event: RawEvent, text: String) -> bool {
        debug_assert!(event.kind() != Some(crate::event::Kind::Line));
        self.texts.push(text);
        self.push(RawEvent {
            line: self.texts.len() as u32,
            ..event
        })
    }

    /// Number of events waiting (payload slots not counted).
    pub fn len(&self) -> usize {
        self.events.len() - self.payload_slots
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drops the waiting events without counting them (after `fork()`,
    /// where they belong to the parent's stream).
    pub fn discard(&mut self) {
        self.events.clear();
        self.payload_slots = 0;
        self.texts.clear();
        self.lost = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FunctionId, Kind};

    #[test]
    fn asks_for_hand_over_when_full_or_old() {
        let mut buf = ThreadBuffer::new(7, Vec::with_capacity(3), 100);
        let ev = |t| RawEvent::new(t, FunctionId(1), Kind::Call, 0);
        assert!(!buf.push(ev(10)));
        assert!(!buf.push(ev(20)));
        assert!(buf.push(ev(30)));
        let mut buf = ThreadBuffer::new(7, Vec::with_capacity(10), 100);
        assert!(!buf.push(ev(10)));
        assert!(buf.push(ev(111)));
    }

    #[test]
    fn try_push_appends_exactly_when_push_would_not_ask_for_a_hand_over() {
        let ev = |t| RawEvent::new(t, FunctionId(1), Kind::Call, 0);
        let times = [5, 10, 20, 104, 105, 106, 300, 301, 302, 303];
        let mut pushed = ThreadBuffer::new(7, Vec::with_capacity(4), 100);
        let mut tried = ThreadBuffer::new(7, Vec::with_capacity(4), 100);
        for t in times {
            let mut probe = ThreadBuffer::new(7, Vec::with_capacity(4), 100);
            probe.events.extend_from_slice(&pushed.events);
            probe.first_ticks = pushed.first_ticks;
            let hand_over = probe.push(ev(t));
            assert_eq!(tried.try_push(ev(t)), !hand_over, "at {t}");
            if hand_over {
                assert!(tried.push(ev(t)));
                tried.events.clear();
            }
            if pushed.push(ev(t)) {
                pushed.events.clear();
            }
            assert_eq!(tried.events, pushed.events, "at {t}");
            assert_eq!(tried.first_ticks, pushed.first_ticks, "at {t}");
        }
    }

    #[test]
    fn marks_take_their_payload_slots_and_ask_for_room() {
        let mut buf = ThreadBuffer::new(7, Vec::with_capacity(4), u64::MAX);
        let mut payload = Payload::new(9, 0.0);
        payload.arg("key", mark::ArgRef::Str("a value over one slot"));
        assert_eq!(payload.slots(), 3);
        assert_eq!(
            buf.push_mark(1, FunctionId(2), Kind::Instant, Some(&payload)),
            Some(true)
        );
        assert_eq!((buf.len(), buf.events.len()), (1, 4));
        assert_eq!(
            buf.push_mark(2, FunctionId(2), Kind::Instant, Some(&payload)),
            None
        );
        // A span end has no payload.
        let mut buf = ThreadBuffer::new(7, Vec::with_capacity(4), u64::MAX);
        assert_eq!(
            buf.push_mark(1, FunctionId(2), Kind::SpanEnd, Some(&payload)),
            Some(false)
        );
        assert_eq!(buf.events.len(), 1);
    }
}
