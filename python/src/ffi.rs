//! CPython entry points that pyo3-ffi does not declare, or declares under a
//! name that is not an exported symbol on every supported version.

use std::os::raw::{c_int, c_void};

use pyo3::ffi::{PyObject, PyThreadState, Py_ssize_t, Py_tracefunc};

extern "C" {
    /// The type of bound methods (`types.MethodType`), which pyo3-ffi does
    /// not declare.
    pub static mut PyMethod_Type: pyo3::ffi::PyTypeObject;

    /// Reads a code object's extra slot (`_PyCode_GetExtra` before 3.12).
    #[cfg_attr(Py_3_12, link_name = "PyUnstable_Code_GetExtra")]
    #[cfg_attr(not(Py_3_12), link_name = "_PyCode_GetExtra")]
    pub fn code_get_extra(code: *mut PyObject, index: Py_ssize_t, extra: *mut *mut c_void)
        -> c_int;

    /// Sets a code object's extra slot.
    #[cfg_attr(Py_3_12, link_name = "PyUnstable_Code_SetExtra")]
    #[cfg_attr(not(Py_3_12), link_name = "_PyCode_SetExtra")]
    pub fn code_set_extra(code: *mut PyObject, index: Py_ssize_t, extra: *mut c_void) -> c_int;

    /// Reserves an index for `code_get_extra`.
    #[cfg_attr(Py_3_12, link_name = "PyUnstable_Eval_RequestCodeExtraIndex")]
    #[cfg_attr(not(Py_3_12), link_name = "_PyEval_RequestCodeExtraIndex")]
    pub fn request_code_extra_index(free: Option<unsafe extern "C" fn(*mut c_void)>) -> Py_ssize_t;

    /// Sets the profile function of one thread (exported in 3.9-3.13).
    pub fn _PyEval_SetProfile(
        tstate: *mut PyThreadState,
        func: Option<Py_tracefunc>,
        arg: *mut PyObject,
    ) -> c_int;

    /// Sets the trace function of one thread (exported in 3.9-3.12).
    #[cfg(not(Py_3_13))]
    pub fn _PyEval_SetTrace(
        tstate: *mut PyThreadState,
        func: Option<Py_tracefunc>,
        arg: *mut PyObject,
    ) -> c_int;

    /// A thread state's id, unique in the interpreter and only growing.
    pub fn PyThreadState_GetID(tstate: *mut PyThreadState) -> u64;

    /// Sets the profile function of every thread (3.12+).
    #[cfg(Py_3_12)]
    pub fn PyEval_SetProfileAllThreads(func: Option<Py_tracefunc>, arg: *mut PyObject);

    /// Sets the trace function of every thread (3.12+).
    #[cfg(Py_3_12)]
    pub fn PyEval_SetTraceAllThreads(func: Option<Py_tracefunc>, arg: *mut PyObject);
}
