//! `rtrace.instant` and `rtrace.counter` as the interpreter calls them:
//! raw `METH_FASTCALL | METH_KEYWORDS` functions that, when nothing
//! records and the call has the usual shape (a str name, and for a counter
//! one int or float), return at once: no argument parsing, no keyword dict, no
//! clock read. Everything else (recording, a wrong call that must raise)
//! goes on to the full implementation in `marks`, unchanged.
//!
//! User events sit in hot paths of programs that run unrecorded most of
//! the time; through PyO3's argument handling an unrecorded `instant` with
//! keyword arguments cost about ten times a call of `len(())`.

// The method tables and calls are CPython's C API; each unsafe block says
// why it holds.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;

use crate::hook;

/// The full implementations the quick entry points hand over to.
static INSTANT: OnceLock<Py<PyAny>> = OnceLock::new();
static COUNTER: OnceLock<Py<PyAny>> = OnceLock::new();

/// Adds `instant` and `counter` to `module`, in front of `instant_impl` and
/// `counter_impl` (the PyO3 functions, which keep their docs).
pub fn add(
    module: &Bound<'_, PyModule>,
    instant_impl: Bound<'_, PyAny>,
    counter_impl: Bound<'_, PyAny>,
) -> PyResult<()> {
    add_one(module, "instant", &instant_impl, instant_quick)?;
    add_one(module, "counter", &counter_impl, counter_quick)?;
    let _ = INSTANT.set(instant_impl.unbind());
    let _ = COUNTER.set(counter_impl.unbind());
    Ok(())
}

type Quick = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

fn add_one(
    module: &Bound<'_, PyModule>,
    name: &str,
    full: &Bound<'_, PyAny>,
    quick: Quick,
) -> PyResult<()> {
    let py = module.py();
    // `help()` and `inspect.signature` read the signature from the doc.
    let signature: String = full.getattr("__text_signature__")?.extract()?;
    let doc: String = full.getattr("__doc__")?.extract().unwrap_or_default();
    let doc = CString::new(format!("{name}{signature}\n--\n\n{doc}"))
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let name_c = CString::new(name).expect("a name without NUL");
    // The table must outlive the function object, which lives as long as
    // the interpreter: leaked once per interpreter start.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name_c.into_raw() as *const c_char,
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: quick,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.into_raw() as *const c_char,
    }));
    let module_name = module.name()?;
    // SAFETY: `def` is 'static; `m_self` is the module, as for functions
    // PyO3 adds (so the hook sees this as an `rtrace._native` function and
    // never records it), and `module_name` is a live str.
    let function = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(def, module.as_ptr(), module_name.as_ptr()),
        )?
    };
    module.add(name, function)
}

/// `None`, as a new reference.
fn none() -> *mut ffi::PyObject {
    // SAFETY: Py_None is immortal or counted; a new reference is returned.
    unsafe {
        let none = ffi::Py_None();
        ffi::Py_IncRef(none);
        none
    }
}

/// Calls the full implementation with the same arguments.
///
/// # Safety
/// The GIL is held and the arguments are the interpreter's, as received.
unsafe fn hand_over(
    full: &OnceLock<Py<PyAny>>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    match full.get() {
        // SAFETY: the caller's contract; `nargs` is a plain count (this is
        // not a vectorcall with the offset flag).
        Some(f) => unsafe { ffi::PyObject_Vectorcall(f.as_ptr(), args, nargs as usize, kwnames) },
        None => none(),
    }
}

/// True when `args[0]` exists and is a str.
///
/// # Safety
/// `args` holds `nargs` live objects.
unsafe fn str_first(args: *const *mut ffi::PyObject, nargs: ffi::Py_ssize_t) -> bool {
    // SAFETY: the caller's contract.
    nargs >= 1 && unsafe { ffi::PyUnicode_Check(*args) } != 0
}

/// `instant(name, /, **args)`.
unsafe extern "C" fn instant_quick(
    _module: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the interpreter calls with the GIL held and `nargs` live
    // positional arguments.
    let named = unsafe { str_first(args, nargs) };
    if !hook::recording() && nargs == 1 && named {
        return none();
    }
    // SAFETY: as above, the arguments as received.
    unsafe { hand_over(&INSTANT, args, nargs, kwnames) }
}

/// True when `args[1]` exists and is an int or a float (or a subclass:
/// bool), a value `counter` takes.
///
/// # Safety
/// `args` holds `nargs` live objects.
unsafe fn number_second(args: *const *mut ffi::PyObject, nargs: ffi::Py_ssize_t) -> bool {
    // SAFETY: the caller's contract.
    nargs >= 2
        && unsafe {
            let value = *args.add(1);
            ffi::PyFloat_Check(value) != 0 || ffi::PyLong_Check(value) != 0
        }
}

/// `counter(name, value, /)`.
unsafe extern "C" fn counter_quick(
    _module: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as in `instant_quick`.
    let well_formed = unsafe { str_first(args, nargs) && number_second(args, nargs) };
    if !hook::recording() && nargs == 2 && kwnames.is_null() && well_formed {
        return none();
    }
    // SAFETY: as above, the arguments as received.
    unsafe { hand_over(&COUNTER, args, nargs, kwnames) }
}
