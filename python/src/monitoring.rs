//! `sys.monitoring` callbacks (CPython 3.12+): plain C functions with the
//! vectorcall convention, so the interpreter calls them without building an
//! argument tuple. The Python side registers them under a free tool id.

use std::os::raw::c_char;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;
use rtrace::Kind;

use crate::hook::{self, CCallable};

type Fast = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *mut *mut ffi::PyObject,
    ffi::Py_ssize_t,
) -> *mut ffi::PyObject;

/// Returns a new reference to None.
#[inline(always)]
fn none() -> *mut ffi::PyObject {
    // SAFETY: Py_None is a valid object.
    #[allow(unsafe_code)]
    let none = unsafe { ffi::Py_None() };
    // Since 3.12 None is immortal (PEP 683): a new reference needs no
    // increment, which `Py_INCREF` would skip anyway after testing for it.
    #[cfg(not(Py_3_12))]
    // SAFETY: as above; we hand out a new reference.
    #[allow(unsafe_code)]
    unsafe {
        ffi::Py_INCREF(none)
    };
    none
}

/// Reads argument `i`, or NULL when there are fewer arguments.
///
/// # Safety
/// `args` points at `nargs` object pointers (the vectorcall contract).
#[allow(unsafe_code)]
#[inline(always)]
unsafe fn arg(
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    i: isize,
) -> *mut ffi::PyObject {
    // SAFETY: PyVectorcall_NARGS only masks the flag bit.
    if unsafe { ffi::PyVectorcall_NARGS(nargs as usize) } > i {
        // SAFETY: in bounds per the caller's contract.
        unsafe { *args.offset(i) }
    } else {
        std::ptr::null_mut()
    }
}

macro_rules! callback {
    ($name:ident, |$args:ident, $nargs:ident| $body:expr) => {
        #[allow(unsafe_code)]
        unsafe extern "C" fn $name(
            _module: *mut ffi::PyObject,
            $args: *mut *mut ffi::PyObject,
            $nargs: ffi::Py_ssize_t,
        ) -> *mut ffi::PyObject {
            $body;
            none()
        }
    };
}

// PY_START, PY_RESUME, PY_THROW: (code, offset[, exception])
callback!(py_start, |args, nargs| {
    // SAFETY: vectorcall arguments from the interpreter.
    let code = unsafe { arg(args, nargs, 0) };
    if !code.is_null() {
        // The frame is the running one (looked up only for log_args).
        hook::on_call(code, std::ptr::null_mut())
    }
});
// PY_RETURN, PY_YIELD: (code, offset, value)
callback!(py_return, |args, nargs| {
    // SAFETY: vectorcall arguments from the interpreter.
    let value = unsafe { arg(args, nargs, 2) };
    hook::on_return(Kind::Return, value)
});
// PY_UNWIND: (code, offset, exception)
callback!(py_unwind, |_args, _nargs| hook::on_return(
    Kind::Exception,
    std::ptr::null_mut()
));
// CALL: (code, offset, callable, arg0)
callback!(call, |args, nargs| {
    // SAFETY: vectorcall arguments from the interpreter.
    let (callable, arg0) = unsafe { (arg(args, nargs, 2), arg(args, nargs, 3)) };
    // Most CALL events call a Python function or method, which its
    // PY_START records: known by its exact type alone, such a call costs
    // no lookup of the session or the thread. (The legacy hook's C_CALL
    // events are of C functions only: it has no such check to pay.)
    if !callable.is_null() && !CCallable::is_python_exact(callable) {
        hook::on_c_call(callable, arg0)
    }
});
// C_RETURN, C_RAISE: (code, offset, callable, arg0)
callback!(c_return, |_args, _nargs| hook::on_c_return());
// LINE: (code, line_number)
callback!(line, |args, nargs| {
    // SAFETY: vectorcall arguments from the interpreter.
    let (code, number) = unsafe { (arg(args, nargs, 0), arg(args, nargs, 1)) };
    if !code.is_null() && !number.is_null() {
        // SAFETY: `number` is a live int; a failed conversion sets an error
        // we clear.
        let n = unsafe { ffi::PyLong_AsLong(number) };
        if n < 0 {
            // SAFETY: GIL held; clears the conversion error, if any.
            unsafe { ffi::PyErr_Clear() };
        } else {
            hook::on_line(code, n as u32)
        }
    }
});

fn make(py: Python<'_>, name: &'static std::ffi::CStr, f: Fast) -> PyResult<PyObject> {
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr() as *const c_char,
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: f },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: std::ptr::null(),
    }));
    // SAFETY: `def` is leaked, so it outlives the function object; the GIL
    // is held.
    #[allow(unsafe_code)]
    unsafe {
        let function = ffi::PyCFunction_NewEx(def, std::ptr::null_mut(), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(py, function).map(Bound::unbind)
    }
}

/// The callback functions, made once per process: each holds a leaked
/// method definition, so making them at every `record()` would leak.
static CALLBACKS: GILOnceCell<Py<PyDict>> = GILOnceCell::new();

/// The callbacks by `sys.monitoring.events` name, for the Python side to
/// register (a fresh dict of the same function objects on every call).
#[pyfunction]
pub fn monitoring_callbacks(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    CALLBACKS
        .get_or_try_init(py, || make_all(py))?
        .bind(py)
        .copy()
}

fn make_all(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let table: [(&str, &'static std::ffi::CStr, Fast); 10] = [
        ("PY_START", c"rtrace_py_start", py_start),
        ("PY_RESUME", c"rtrace_py_resume", py_start),
        ("PY_THROW", c"rtrace_py_throw", py_start),
        ("PY_RETURN", c"rtrace_py_return", py_return),
        ("PY_YIELD", c"rtrace_py_yield", py_return),
        ("PY_UNWIND", c"rtrace_py_unwind", py_unwind),
        ("CALL", c"rtrace_call", call),
        ("C_RETURN", c"rtrace_c_return", c_return),
        ("C_RAISE", c"rtrace_c_raise", c_return),
        ("LINE", c"rtrace_line", line),
    ];
    let dict = PyDict::new(py);
    for (event, name, f) in table {
        dict.set_item(event, make(py, name, f)?)?;
    }
    Ok(dict.unbind())
}
