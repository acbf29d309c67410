//! The bounded queue between the hook and the writer thread, with a pool of
//! recycled event arrays and the overflow policy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// The producer side of the queue, shared by all recording threads.
#[derive(Debug)]
pub struct Queue {
    batches: Sender<Batch>,
    pool: Receiver<Vec<RawEvent>>,
    chunk_events: usize,
    on_full: OnFull,
    block_timeout: Duration,
    owner_pid: u32,
    lost: AtomicU64,
}

/// The writer's side: batches to write and the pool to return arrays to.
#[derive(Debug)]
pub struct QueueReceiver {
    pub batches: Receiver<Batch>,
    pub pool: Sender<Vec<RawEvent>>,
}

impl Queue {
    /// A queue holding at most `capacity` batches of `chunk_events` events.
    pub fn new(
        capacity: usize,
        chunk_events: usize,
        on_full: OnFull,
        block_timeout: Duration,
    ) -> (Queue, QueueReceiver) {
        let (batch_tx, batch_rx) = crossbeam_channel::bounded(capacity);
        let (pool_tx, pool_rx) = crossbeam_channel::bounded(capacity);
        let queue = Queue {
            batches: batch_tx,
            pool: pool_rx,
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
        if self.on_full == OnFull::Drop && self.batches.is_full() {
            // The common overflow case: count and reuse the same array.
            let n = buf.len() as u64;
            buf.events.clear();
            buf.payload_slots = 0;
            buf.texts.clear();
            buf.lost += n;
            self.lost.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let batch = self.take_batch(buf);
        let refused = match self.on_full {
            OnFull::Drop => self.batches.try_send(batch).err().map(|e| e.into_inner()),
            OnFull::Block => self
                .batches
                .send_timeout(batch, self.block_timeout)
                .err()
                .map(|e| e.into_inner()),
        };
        match refused {
            None => buf.lost = 0,
            Some(batch) => self.count_lost(buf, batch),
        }
    }

    /// Hands the buffer's events over if the queue has room now; else
    /// leaves them in the buffer. Returns true if it handed them over.
    pub fn offer(&self, buf: &mut ThreadBuffer) -> bool {
        if buf.events.is_empty() || std::process::id() != self.owner_pid || self.batches.is_full() {
            return false;
        }
        let batch = self.take_batch(buf);
        match self.batches.try_send(batch) {
            Ok(()) => {
                buf.lost = 0;
                true
            }
            Err(refused) => {
                // Filled up since the check: keep the events, free the
                // array taken for them.
                let batch = refused.into_inner();
                buf.events = batch.events;
                buf.payload_slots = batch.payload_slots;
                buf.texts = batch.texts;
                false
            }
        }
    }

    /// The buffer's events as a batch; the buffer gets a fresh array.
    fn take_batch(&self, buf: &mut ThreadBuffer) -> Batch {
        let events = std::mem::replace(&mut buf.events, self.take_array());
        Batch {
            tid: buf.tid,
            events,
            lost_before: buf.lost,
            payload_slots: std::mem::take(&mut buf.payload_slots),
            texts: std::mem::take(&mut buf.texts),
        }
    }

    fn count_lost(&self, buf: &mut ThreadBuffer, batch: Batch) {
        let mut events = batch.events;
        let n = (events.len() - batch.payload_slots) as u64;
        buf.lost += n;
        self.lost.fetch_add(n, Ordering::Relaxed);
        events.clear();
        // Keep the array we had; the fresh one taken for it is freed (only
        // when another thread filled the queue between the check and here,
        // or when blocking timed out).
        buf.events = events;
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
        assert_eq!(rx.batches.recv().unwrap().events.len(), 4);
        b.push(RawEvent::new(9, FunctionId(0), Kind::Call, 0));
        queue.hand_over(&mut b);
        let next = rx.batches.recv().unwrap();
        assert_eq!((next.events.len(), next.lost_before), (1, 3));
    }

    #[test]
    fn block_policy_waits_then_counts() {
        let (queue, rx) = Queue::new(1, 4, OnFull::Block, Duration::from_millis(20));
        let mut a = filled(&queue, 2);
        queue.hand_over(&mut a);
        let mut b = filled(&queue, 2);
        queue.hand_over(&mut b);
        assert_eq!(queue.lost(), 2);
        drop(rx);
    }

    #[test]
    fn rejects_unknown_policy_with_the_choices() {
        let err = "wait".parse::<OnFull>().unwrap_err().to_string();
        assert!(err.contains("\"drop\" or \"block\""), "{err}");
    }
}
