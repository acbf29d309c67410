//! rtrace's slot in code objects' extra data (PEP 523's `co_extra`), where
//! the hook keeps each function's id so that it is interned once.
//!
//! The hook reads the slot on every call. `PyUnstable_Code_GetExtra` (and
//! `_PyCode_GetExtra` before 3.12) is a call into the interpreter that
//! checks the object's type first: ~20 instructions per call, a sixth of
//! the hook's cost. Where the `co_extra` field sits at the offset this
//! build's CPython headers put it — checked on a real code object when the
//! slot is reserved — the slot is read in place instead; anywhere else
//! (another build of CPython, a debug build with a different object
//! header) through the API.

use std::os::raw::c_void;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;

use crate::ffi::{code_get_extra, code_set_extra, request_code_extra_index};

/// `offsetof(PyCodeObject, co_extra)` in the headers of each supported
/// CPython (64-bit, release build).
#[cfg(not(Py_3_12))]
const CO_EXTRA_OFFSET: usize = 176;
#[cfg(all(Py_3_12, not(Py_3_13)))]
const CO_EXTRA_OFFSET: usize = 184;
#[cfg(Py_3_13)]
const CO_EXTRA_OFFSET: usize = 192;

/// What `co_extra` points to (`_PyCodeObjectExtra`, the same in 3.11 to
/// 3.13): a size and that many slots.
#[repr(C)]
struct Extras {
    size: ffi::Py_ssize_t,
    slots: [*mut c_void; 1],
}

/// rtrace's slot: its index, and whether it can be read in place.
#[derive(Clone, Copy, Debug)]
pub struct CodeExtra {
    index: ffi::Py_ssize_t,
    /// `CO_EXTRA_OFFSET` when checked, 0 to go through the API.
    offset: usize,
}

impl CodeExtra {
    /// Reserves a slot. Call once per process, with the GIL held.
    pub fn reserve(py: Python<'_>) -> Option<CodeExtra> {
        // SAFETY: GIL held; rtrace stores plain integers in the slot, so no
        // free function is needed.
        #[allow(unsafe_code)]
        let index = unsafe { request_code_extra_index(None) };
        if index < 0 {
            return None;
        }
        let api = CodeExtra { index, offset: 0 };
        let direct = CodeExtra {
            index,
            offset: CO_EXTRA_OFFSET,
        };
        Some(if direct.agrees_with_api(py) {
            direct
        } else {
            api
        })
    }

    /// Whether reading in place gives what the API gives, on a fresh code
    /// object before and after its slot is set.
    fn agrees_with_api(self, py: Python<'_>) -> bool {
        // An empty code object, not `compile()`: the interpreter's first
        // compile in a process takes ~3 ms (3.12), all of it start-up time
        // of the first recording.
        // SAFETY: GIL held; both strings are NUL-terminated. A new
        // reference, or NULL with an exception set.
        #[allow(unsafe_code)]
        let Ok(code) = (unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyCode_NewEmpty(c"<rtrace probe>".as_ptr(), c"probe".as_ptr(), 1).cast(),
            )
        }) else {
            return false;
        };
        let code = code.as_ptr();
        // SAFETY: `code` is a live object; its type's basic size bounds
        // the fixed part of the object, which the in-place read must stay
        // inside.
        #[allow(unsafe_code)]
        let fits = unsafe {
            ffi::PyCode_Check(code) != 0
                && (*ffi::Py_TYPE(code)).tp_basicsize as usize
                    >= self.offset + std::mem::size_of::<*mut c_void>()
        };
        if !fits || self.get(code) != 0 {
            return false;
        }
        const PROBE: u64 = 0x5a5a_0001;
        // A failed store leaves the slot empty: the comparison below fails.
        self.set(code, PROBE);
        let api = CodeExtra { offset: 0, ..self };
        self.get(code) == PROBE && api.get(code) == PROBE
    }

    /// The value in `code`'s slot (0 if never set).
    #[inline(always)]
    pub fn get(self, code: *mut ffi::PyObject) -> u64 {
        if let Some(value) = self.get_in_place(code) {
            return value;
        }
        let mut extra: *mut c_void = ptr::null_mut();
        // SAFETY: `code` is a live code object and `index` was reserved.
        #[allow(unsafe_code)]
        let status = unsafe { code_get_extra(code, self.index, &mut extra) };
        if status == 0 {
            extra as u64
        } else {
            0
        }
    }

    /// `get` where the slot is read in place (no call), else `None`.
    #[inline(always)]
    pub fn get_in_place(self, code: *mut ffi::PyObject) -> Option<u64> {
        if self.offset == 0 {
            return None;
        }
        // SAFETY: `code` is a live code object (from the interpreter, GIL
        // held) and `reserve` checked that `co_extra` is at `offset`: a
        // null pointer or an `Extras` whose size bounds the index.
        #[allow(unsafe_code)]
        unsafe {
            let extras = *code.cast::<u8>().add(self.offset).cast::<*const Extras>();
            if extras.is_null() || (*extras).size <= self.index {
                return Some(0);
            }
            let slots = ptr::addr_of!((*extras).slots).cast::<*mut c_void>();
            Some(*slots.add(self.index as usize) as u64)
        }
    }

    /// Stores `value` in `code`'s slot. If the interpreter cannot (no
    /// memory), the slot stays empty and no exception is left set: the
    /// function is interned again, under a new id, on its next call. GIL
    /// held.
    pub fn set(self, code: *mut ffi::PyObject, value: u64) {
        // SAFETY: `code` is a live code object and `index` was reserved;
        // the slot holds a plain integer, which needs no freeing.
        #[allow(unsafe_code)]
        if unsafe { code_set_extra(code, self.index, value as *mut c_void) } != 0 {
            // SAFETY: GIL held; clears the error the failed call set.
            #[allow(unsafe_code)]
            unsafe {
                ffi::PyErr_Clear()
            };
        }
    }

    /// Whether the slot is read in place (for tests and diagnostics).
    pub fn in_place(self) -> bool {
        self.offset != 0
    }
}
