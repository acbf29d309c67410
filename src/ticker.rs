//! Runs the front-end's flush tick (`Recorder::set_tick`) on a thread of its
//! own, so that the writer thread keeps draining the queue while a tick
//! waits.
//!
//! Python's tick takes the GIL. While four threads tracing flat out passed
//! the GIL among themselves, the writer waited for it for tens of
//! milliseconds at a tick, the queue (1 Mi events, ~40 ms of such a
//! process) filled, and a recording to a plain file lost up to a third of
//! its events. Here the writer asks for a tick and goes on writing; the
//! answer (the promise) comes back through a channel, and the writer then
//! writes what is queued, then the promise, as before.
//!
//! The thread lives as long as the writer thread: it starts at the first
//! tick and is stopped when the writer parks (before `fork()`, which must
//! find no extra thread) or finishes. Stopping waits for a tick in flight
//! for a bounded time only: a tick waiting for the GIL that the stopping
//! caller holds would otherwise wait forever.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, Receiver, RecvError, RecvTimeoutError, Sender};

use crate::writer::Tick;

/// How long stopping waits for a tick in flight to return.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// The writer's handle on the tick thread.
pub(crate) struct Ticker {
    /// The running thread: where it takes ticks to run (each with the
    /// callback as it is now, so that a recording that has ended runs
    /// none), and its handle.
    thread: Option<(Sender<Tick>, JoinHandle<u64>)>,
    /// From the thread: a tick's answer (see `Tick`); disconnected once the
    /// thread has left. `never()` while no thread runs.
    answers: Receiver<Option<u64>>,
    /// A tick is in flight: its answer has not come back yet.
    asked: bool,
}

impl Ticker {
    /// No thread yet: it starts at the first `ask`.
    pub fn new() -> Ticker {
        Ticker {
            thread: None,
            answers: never(),
            asked: false,
        }
    }

    /// Where the answers come (for the writer's `select!`); hand what comes
    /// to `answered`.
    pub fn answers(&self) -> &Receiver<Option<u64>> {
        &self.answers
    }

    /// True while a tick is in flight.
    pub fn asked(&self) -> bool {
        self.asked
    }

    /// What came from `answers`: the tick's answer, or `None` if the thread
    /// is gone (a tick panicked), which the next ask replaces.
    pub fn answered(&mut self, got: Result<Option<u64>, RecvError>) -> Option<Option<u64>> {
        match got {
            Ok(answer) => {
                self.asked = false;
                Some(answer)
            }
            Err(RecvError) => {
                self.stop();
                None
            }
        }
    }

    /// Asks the thread to run `tick`, starting it first if needed; gives the
    /// tick back if the thread cannot start or is gone (the writer then
    /// runs it itself; the next ask starts another). Call only when no tick
    /// is in flight.
    pub fn ask(&mut self, tick: Tick) -> Result<(), Tick> {
        debug_assert!(!self.asked);
        if self.thread.is_none() && self.start().is_err() {
            return Err(tick);
        }
        let Some((asks, _)) = &self.thread else {
            return Err(tick);
        };
        match asks.try_send(tick) {
            Ok(()) => {
                self.asked = true;
                Ok(())
            }
            Err(e) => {
                self.stop();
                Err(e.into_inner())
            }
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        let (ask_tx, ask_rx) = bounded::<Tick>(1);
        let (answer_tx, answer_rx) = bounded(1);
        let handle = std::thread::Builder::new()
            .name("rtrace-tick".into())
            .spawn(move || {
                // It mostly waits; when it runs, it is no more urgent than
                // the writer (see `sched`).
                let _ = crate::sched::batch_current_thread();
                for tick in ask_rx {
                    if answer_tx.send(tick()).is_err() {
                        break;
                    }
                }
                crate::sched::current_tid()
            })?;
        self.thread = Some((ask_tx, handle));
        self.answers = answer_rx;
        Ok(())
    }

    /// Stops the thread: waits for a tick in flight to return (for
    /// `STOP_WAIT` at most), then for the kernel to let go of the thread.
    /// If the tick does not return in time, the thread is left to end by
    /// itself once it does. Later asks start a new thread.
    pub fn stop(&mut self) {
        self.asked = false;
        let answers = std::mem::replace(&mut self.answers, never());
        // Dropping the sender ends the thread's loop once a tick in flight
        // has returned.
        let Some((_, handle)) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_WAIT;
        // The answer of a tick in flight (dropped), then the disconnection
        // once the thread has left its loop; a timeout leaves the thread to
        // end by itself (dropping the handle detaches it).
        loop {
            match answers.recv_deadline(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if let Ok(tid) = handle.join() {
                        crate::recorder::wait_until_gone(tid, deadline);
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    const ANSWER_WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_tick_runs_off_the_callers_thread_and_its_answer_comes_back() {
        let mut ticker = Ticker::new();
        let caller = std::thread::current().id();
        let tick: Tick = Arc::new(move || (std::thread::current().id() != caller).then_some(7));
        assert!(ticker.ask(tick).is_ok(), "no tick thread");
        assert!(ticker.asked());
        assert_eq!(ticker.answers().recv_timeout(ANSWER_WAIT), Ok(Some(7)));
        ticker.stop();
    }

    #[test]
    fn a_tick_that_panics_ends_its_thread_and_the_next_ask_starts_another() {
        let mut ticker = Ticker::new();
        let panics: Tick = Arc::new(|| panic!("a tick that fails (expected by this test)"));
        assert!(ticker.ask(panics).is_ok(), "no tick thread");
        // The thread is gone: its answers disconnect, and the next ask
        // starts another thread.
        let got = ticker.answers().recv_timeout(ANSWER_WAIT);
        assert!(got.is_err(), "{got:?}");
        assert_eq!(ticker.answered(Err(RecvError)), None);
        assert!(!ticker.asked());
        let answers: Tick = Arc::new(|| Some(3));
        assert!(ticker.ask(answers).is_ok(), "no new tick thread");
        assert_eq!(ticker.answers().recv_timeout(ANSWER_WAIT), Ok(Some(3)));
        ticker.stop();
    }

    #[test]
    fn stop_waits_for_a_tick_in_flight_to_return() {
        let mut ticker = Ticker::new();
        let returned = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&returned);
        let slow: Tick = Arc::new(move || {
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
            None
        });
        assert!(ticker.ask(slow).is_ok(), "no tick thread");
        std::thread::sleep(Duration::from_millis(10));
        ticker.stop();
        assert!(returned.load(Ordering::SeqCst));
    }

    #[test]
    fn stop_leaves_a_tick_that_does_not_return_in_time() {
        let mut ticker = Ticker::new();
        let stuck: Tick = Arc::new(|| {
            std::thread::sleep(STOP_WAIT * 3);
            None
        });
        assert!(ticker.ask(stuck).is_ok(), "no tick thread");
        let started = Instant::now();
        ticker.stop();
        let waited = started.elapsed();
        assert!(
            waited >= STOP_WAIT && waited < STOP_WAIT * 2,
            "stop waited {waited:?}"
        );
        // A new thread answers meanwhile.
        let answers: Tick = Arc::new(|| Some(1));
        assert!(ticker.ask(answers).is_ok(), "no tick thread");
        assert_eq!(ticker.answers().recv_timeout(ANSWER_WAIT), Ok(Some(1)));
        ticker.stop();
    }
}
