//! State that only code holding the GIL touches.

use std::cell::UnsafeCell;

/// A value accessed only while holding the GIL, by code that never
/// re-enters itself (the interpreter does not call hooks from inside a hook,
/// and no Python code runs while a `GilCell` borrow is alive).
pub struct GilCell<T>(UnsafeCell<T>);

// SAFETY: every access goes through `get`, whose contract requires the GIL,
// which serialises all accesses across threads.
#[allow(unsafe_code)]
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> GilCell<T> {
        GilCell(UnsafeCell::new(value))
    }

    /// Borrows the value mutably.
    ///
    /// # Safety
    /// The caller holds the GIL and no other borrow of this cell is alive
    /// (no Python code may run while the borrow is held).
    #[allow(unsafe_code, clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: exclusivity is the caller's contract (see above).
        unsafe { &mut *self.0.get() }
    }
}
