//! A thread's event buffer: a fixed-capacity array the hook appends to with
//! no allocation, no lock and no syscall. When it is full, or its oldest
//! event is older than the flush interval, the hook hands it to the queue.

use crate::event::RawEvent;

/// Events of one thread waiting to be handed to the writer.
#[derive(Debug)]
pub struct ThreadBuffer {
    pub(crate) events: Vec<RawEvent>,
    /// OS thread id the events belong to.
    pub tid: u64,
    /// Events of this thread dropped since its last delivered batch.
    pub(crate) lost: u64,
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

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drops the waiting events without counting them (after `fork()`,
    /// where they belong to the parent's stream).
    pub fn discard(&mut self) {
        self.events.clear();
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
}
