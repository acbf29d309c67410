//! A request to stop collecting (SIGINT, SIGTERM, or a caller's), which
//! wakes the thread waiting for it at once.
//!
//! A flag alone is seen only when the merge loop next looks at it, up to a
//! tick (10 ms) after Ctrl-C; with the wake-up the merged file is complete
//! as soon as the streams are drained and the file is written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};

/// Set once; wakes whoever waits on `woken` (or in `wait`).
#[derive(Debug)]
pub struct Stop {
    requested: AtomicBool,
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        // One wake-up is enough: whoever takes it then sees `requested`.
        let (wake, woken) = crossbeam_channel::bounded(1);
        Arc::new(Stop {
            requested: AtomicBool::new(false),
            wake,
            woken,
        })
    }

    /// A stop that SIGINT or SIGTERM requests. The signals are taken by a
    /// thread of their own (signal-hook's iterator): waking a waiter is not
    /// something a signal handler may do.
    pub fn on_signals() -> Result<Arc<Stop>> {
        let stop = Stop::new();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .context("handling SIGINT and SIGTERM")?;
        let requester = stop.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    requester.request();
                }
            })
            .context("starting the signal thread")?;
        Ok(stop)
    }

    /// Requests the stop and wakes the waiter.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Receives a message when a stop is requested: for `select!` beside
    /// other channels. Look at `requested` after it fires.
    pub fn woken(&self) -> &Receiver<()> {
        &self.woken
    }

    /// Waits until a stop is requested or `timeout` passes; true if
    /// requested.
    pub fn wait(&self, timeout: Duration) -> bool {
        if !self.requested() {
            let _ = self.woken.recv_timeout(timeout);
        }
        self.requested()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_request_wakes_the_waiter_at_once() {
        let stop = Stop::new();
        assert!(!stop.wait(Duration::from_millis(1)));
        let requester = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            requester.request();
        });
        let started = Instant::now();
        assert!(stop.wait(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
        // Requested for good: later waits return at once.
        assert!(stop.wait(Duration::from_secs(30)));
        stop.request();
        assert!(stop.requested());
    }
}
