//! The bounded queue between the hook and the writer thread, with a pool of
//! recycled event arrays and the overflow policy.
//!
//! The bound is on events, not on batches: a thread hands its buffer over
//! when it is full, but also when its oldest event is a flush interval old
//! (or at the idle sweep), and such batches may hold a handful of events.
//! Counting batches would let a stalled writer drop events long before
//! `buffer_events` of them wait. A batch that is not full is copied into
//! an array of its own size, so the queue's memory follows its events.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::buffer::ThreadBuffer;
use crate::event::RawEvent;

/// What the hook does when the writer cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Drop the buffer's events and count them as lost; never stall.
    Drop,
    /// Wait for room, up to the queue's block timeout, then drop and count.
    Block,
}

impl std::str::FromStr for OnFull {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<OnFull> {
        match s {
            "drop" => Ok(OnFull::Drop),
            "block" => Ok(OnFull::Block),
            other => Err(crate::Error::Config(format!(
                "on_full must be \"drop\" or \"block\", not {other:?}"
            ))),
        }
    }
}

/// One thread's events on their way to the writer.
#[derive(Debug)]
pub struct Batch {
    pub tid: u64,
    pub events: Vec<RawEvent>,
    pub lost_before: u64,
    /// Of `events`, how many are mark payload slots.
    pub payload_slots: usize,
    /// Texts the events refer to (see `ThreadBuffer::push_with_text`).
    pub texts: Vec<String>,
}

/// Room in the queue, counted in event slots (payload slots included),
/// shared by the producers and the writer.
#[derive(Debug)]
struct Room {
    max_slots: usize,
    queued: AtomicUsize,
    /// Producers that block wait here for the writer to take batches.
    lock: Mutex<()>,
    freed: Condvar,
}

impl Room {
    /// Takes room for `n` slots, if there is.
    fn reserve(&self, n: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= self.max_slots).then_some(q + n)
            })
            .is_ok()
    }

    /// Gives back room for `n` slots and wakes blocked producers.
    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.freed.notify_all();
    }

    /// Waits up to `timeout` for room for `n` slots; takes it if it comes.
    fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.reserve(n) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.freed.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// The producer side of the queue, shared by all recording threads.
#[derive(Debug)]
pub struct Queue {
    batches: Sender<Batch>,
    pool: Receiver<Vec<RawEvent>>,
    room: Arc<Room>,
    chunk_events: usize,
    on_full: OnFull,
    block_timeout: Duration,
    owner_pid: u32,
    lost: AtomicU64,
}

/// The writer's side: batches to write, and `done` for each once written.
#[derive(Debug)]
pub struct QueueReceiver {
    pub batches: Receiver<Batch>,
    pool: Sender<Vec<RawEvent>>,
    room: Arc<Room>,
    chunk_events: usize,
}

impl QueueReceiver {
    /// A batch is written (or counted lost): its room is free again and
    /// its array, if full-sized, goes back to the pool.
    pub fn done(&self, mut batch: Batch) {
        self.room.release(batch.events.len());
        if batch.events.capacity() >= self.chunk_events {
            batch.events.clear();
            let _ = self.pool.try_send(batch.events);
        }
    }
}

impl Queue {
    /// A queue holding at most `capacity` full batches of `chunk_events`
    /// events (that many events, in batches of any size).
    pub fn new(
        capacity: usize,
        chunk_events: usize,
        on_full: OnFull,
        block_timeout: Duration,
    ) -> (Queue, QueueReceiver) {
        // Unbounded as a channel: bounded by `room` (every batch holds at
        // least one event).
        let (batch_tx, batch_rx) = crossbeam_channel::unbounded();
        let (pool_tx, pool_rx) = crossbeam_channel::bounded(capacity);
        let room = Arc::new(Room {
            max_slots: capacity * chunk_events,
            queued: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        });
        let queue = Queue {
            batches: batch_tx,
            pool: pool_rx,
            room: room.clone(),
            chunk_events,
            on_full,
            block_timeout,
            owner_pid: std::process::id(),
            lost: AtomicU64::new(0),
        };
        (
            queue,
            QueueReceiver {
                batches: batch_rx,
                pool: pool_tx,
                room,
                chunk_events,
            },
        )
    }

    /// A fresh, empty event array for a thread buffer.
    pub fn take_array(&self) -> Vec<RawEvent> {
        self.pool
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.chunk_events))
    }

    /// Hands the buffer's events to the writer and leaves it empty. When the
    /// queue is full the policy applies; dropped events are counted, in the
    /// total and on the buffer (they travel with its next batch).
    pub fn hand_over(&self, buf: &mut ThreadBuffer) {
        if buf.events.is_empty() {
            return;
        }
        if std::process::id() != self.owner_pid {
            // A forked child: these events belong to no stream of ours.
            buf.discard();
            return;
        }
        let slots = buf.events.len();
        let room = match self.on_full {
            OnFull::Drop => self.room.reserve(slots),
            OnFull::Block => self.room.wait_for(slots, self.block_timeout),
        };
        if room {
            self.send(buf);
        } else {
            self.count_lost(buf);
        }
    }

    /// Hands the buffer's events over if the queue has room now; else
    /// leaves them in the buffer. Returns true if it handed them over.
    pub fn offer(&self, buf: &mut ThreadBuffer) -> bool {
        if buf.events.is_empty()
            || std::process::id() != self.owner_pid
            || !self.room.reserve(buf.events.len())
        {
            return false;
        }
        self.send(buf);
        true
    }

    /// Sends the buffer's events (room for them is taken).
    fn send(&self, buf: &mut ThreadBuffer) {
        let batch = self.take_batch(buf);
        match self.batches.send(batch) {
            Ok(()) => buf.lost = 0,
            Err(refused) => {
                // The writer is gone (the recording ended).
                let batch = refused.into_inner();
                self.room.release(batch.events.len());
                let n = (batch.events.len() - batch.payload_slots) as u64;
                buf.lost += n;
                self.lost.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The buffer's events as a batch. A full buffer's array goes whole
    /// and the buffer gets a fresh one; a partly filled one is copied into
    /// an array of its size, and the buffer keeps its own.
    fn take_batch(&self, buf: &mut ThreadBuffer) -> Batch {
        let events = if buf.events.len() == buf.events.capacity() {
            std::mem::replace(&mut buf.events, self.take_array())
        } else {
            let events = buf.events.clone();
            buf.events.clear();
            events
        };
        Batch {
            tid: buf.tid,
            events,
            lost_before: buf.lost,
            payload_slots: std::mem::take(&mut buf.payload_slots),
            texts: std::mem::take(&mut buf.texts),
        }
    }

    /// Drops the buffer's events, counting them; the buffer keeps its array.
    fn count_lost(&self, buf: &mut ThreadBuffer) {
        let n = buf.len() as u64;
        buf.events.clear();
        buf.payload_slots = 0;
        buf.texts.clear();
        buf.lost += n;
        self.lost.fetch_add(n, Ordering::Relaxed);
    }

    /// Events dropped so far because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Counts events lost for reasons other than a full queue.
    pub fn add_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FunctionId, Kind};

    fn filled(queue: &Queue, n: u64) -> ThreadBuffer {
        let mut buf = ThreadBuffer::new(1, queue.take_array(), u64::MAX);
        for t in 0..n {
            buf.push(RawEvent::new(t, FunctionId(0), Kind::Call, 0));
        }
        buf
    }

    #[test]
    fn drop_policy_counts_and_carries_losses() {
        let (queue, rx) = Queue::new(1, 4, OnFull::Drop, Duration::ZERO);
        let mut a = filled(&queue, 4);
        queue.hand_over(&mut a);
        let mut b = filled(&queue, 3);
        queue.hand_over(&mut b);
        assert_eq!(queue.lost(), 3);
        assert!(b.is_empty());
        let first = rx.batches.recv().unwrap();
        assert_eq!(first.events.len(), 4);
        rx.done(first);
        b.push(RawEvent::new(9, FunctionId(0), Kind::Call, 0));
        queue.hand_over(&mut b);
        let next = rx.batches.recv().unwrap();
        assert_eq!((next.events.len(), next.lost_before), (1, 3));
    }

    #[test]
    fn the_bound_counts_events_not_batches() {
        // Room for 2 full buffers of 8: 16 events, however they come.
        let (queue, rx) = Queue::new(2, 8, OnFull::Drop, Duration::ZERO);
        let mut buf = filled(&queue, 0);
        for t in 0..17 {
            buf.push(RawEvent::new(t, FunctionId(0), Kind::Call, 0));
            queue.hand_over(&mut buf);
            assert_eq!(buf.events.capacity(), 8, "the buffer keeps its array");
        }
        assert_eq!((rx.batches.len(), queue.lost()), (16, 1));
        let batch = rx.batches.recv().unwrap();
        assert_eq!(batch.events.capacity(), 1, "copied to its size");
        rx.done(batch);
        buf.push(RawEvent::new(99, FunctionId(0), Kind::Call, 0));
        queue.hand_over(&mut buf);
        assert_eq!((rx.batches.len(), queue.lost()), (16, 1));
    }

    #[test]
    fn block_policy_waits_for_room_then_counts() {
        let (queue, rx) = Queue::new(1, 4, OnFull::Block, Duration::from_millis(20));
        let mut a = filled(&queue, 2);
        queue.hand_over(&mut a);
        let mut b = filled(&queue, 3);
        queue.hand_over(&mut b);
        assert_eq!(queue.lost(), 3);
        // Room freed while a producer waits lets it in.
        let (queue, rx2) = Queue::new(1, 4, OnFull::Block, Duration::from_secs(10));
        let mut a = filled(&queue, 4);
        queue.hand_over(&mut a);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let batch = rx2.batches.recv().unwrap();
            rx2.done(batch);
            rx2
        });
        let mut b = filled(&queue, 4);
        queue.hand_over(&mut b);
        assert_eq!(queue.lost(), 0);
        drop((rx, writer.join().unwrap()));
    }

    #[test]
    fn rejects_unknown_policy_with_the_choices() {
        let err = "wait".parse::<OnFull>().unwrap_err().to_string();
        assert!(err.contains("\"drop\" or \"block\""), "{err}");
    }
}
