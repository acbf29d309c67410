//! The recording state of the thread that recorded last, found without a
//! thread-local lookup.
//!
//! Hooks run one at a time (they hold the GIL), and the GIL changes hands
//! every few milliseconds, so nearly every event comes from the thread that
//! recorded the one before. A thread-local from a shared library costs a
//! call to `__tls_get_addr` (general-dynamic TLS) and `thread_local!`'s
//! initialisation check on every event; comparing the CPU's thread pointer
//! with the one kept here costs two loads and a compare
//! (`benches/instructions.py` counts the difference).
//!
//! The thread pointer (the address of the thread's control block) is unique
//! among live threads, but a new thread may reuse an exited one's: a thread
//! forgets itself here when it exits (`forget_current`), before its control
//! block can be reused.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::hook::SlotState;

/// The cached thread: its thread pointer (0: none), the recording
/// generation its state belongs to, and the state.
struct LastThread {
    thread: AtomicUsize,
    generation: AtomicU32,
    state: AtomicPtr<SlotState>,
}

static LAST: LastThread = LastThread {
    thread: AtomicUsize::new(0),
    generation: AtomicU32::new(0),
    state: AtomicPtr::new(std::ptr::null_mut()),
};

/// The calling thread's state, if it is the cached one and belongs to the
/// recording `generation`. Call from a hook (GIL held).
#[inline(always)]
pub fn get(generation: u32) -> Option<*mut SlotState> {
    let tp = thread_pointer()?;
    // Relaxed: a match is only possible for a value this thread stored
    // itself (see `set`), which it sees in program order.
    if LAST.thread.load(Ordering::Relaxed) != tp
        || LAST.generation.load(Ordering::Relaxed) != generation
    {
        return None;
    }
    Some(LAST.state.load(Ordering::Relaxed))
}

/// Caches the calling thread's state for `generation`. Call from a hook
/// (GIL held); `state` must stay valid while that recording is active.
pub fn set(generation: u32, state: *mut SlotState) {
    let Some(tp) = thread_pointer() else { return };
    // Cleared first: no thread can match while the other fields change.
    LAST.thread.store(0, Ordering::Release);
    LAST.generation.store(generation, Ordering::Relaxed);
    LAST.state.store(state, Ordering::Relaxed);
    LAST.thread.store(tp, Ordering::Release);
}

/// Forgets the calling thread if it is the cached one. Safe without the
/// GIL (at thread exit): it only ever clears this thread's own entry.
pub fn forget_current() {
    let Some(tp) = thread_pointer() else { return };
    let _ = LAST
        .thread
        .compare_exchange(tp, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// Whether this platform has a thread pointer to recognise threads by.
pub fn supported() -> bool {
    thread_pointer().is_some()
}

/// Forgets whichever thread is cached (its state is retired). GIL held.
pub fn forget_all() {
    LAST.thread.store(0, Ordering::Release);
}

/// The calling thread's thread pointer, where reading it costs one
/// instruction; `None` elsewhere (the thread-local path is used).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[inline(always)]
fn thread_pointer() -> Option<usize> {
    let tp: usize;
    // SAFETY: the TLS ABIs keep the thread pointer where it is read here:
    // on x86-64 the thread control block holds its own address in its
    // first word, `%fs:0`; on aarch64 it is `tpidr_el0`. The reads have no
    // effects.
    #[allow(unsafe_code)]
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!(
            "mov {}, qword ptr fs:0",
            out(reg) tp,
            options(nostack, preserves_flags, readonly, pure)
        );
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!(
            "mrs {}, tpidr_el0",
            out(reg) tp,
            options(nostack, preserves_flags, nomem, pure)
        );
    }
    Some(tp)
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
#[inline(always)]
fn thread_pointer() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_live_thread_has_its_own_thread_pointer() {
        let here = thread_pointer();
        let there = std::thread::spawn(thread_pointer).join().unwrap();
        if here.is_some() {
            assert_ne!(here, there);
            assert_eq!(here, thread_pointer());
        }
    }
}
