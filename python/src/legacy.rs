//! The legacy hook: C profile function (calls, returns, C calls) and, with
//! `lines=True`, a C trace function (lines). Used on 3.11, and on 3.12+
//! when no `sys.monitoring` tool id is free.
//!
//! As in coverage.py's C tracer, the objects registered with the interpreter
//! are callable like the Python-level functions would be, so that
//! `sys.setprofile(sys.getprofile())` and `sys.settrace(sys.gettrace())`
//! keep recording; and the trace function keeps `f_trace` current on every
//! frame, so that after such a round trip the Python-level trampoline still
//! finds a line callback on the frames that were already running.

use std::os::raw::c_int;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use rtrace::Kind;

use crate::hook;

static C_CALLS: AtomicBool = AtomicBool::new(true);

/// The object registered as the profile function's argument; what
/// `sys.getprofile()` returns while recording.
#[pyclass(module = "rtrace._native", frozen)]
pub struct ProfileHook;

/// The object registered as the trace function's argument; what
/// `sys.gettrace()` returns while recording with `lines=True`.
#[pyclass(module = "rtrace._native", frozen)]
pub struct TraceHook;

static PROFILE_HOOK: GILOnceCell<Py<ProfileHook>> = GILOnceCell::new();
static TRACE_HOOK: GILOnceCell<Py<TraceHook>> = GILOnceCell::new();

fn event_code(event: &str) -> Option<c_int> {
    Some(match event {
        "call" => ffi::PyTrace_CALL,
        "return" => ffi::PyTrace_RETURN,
        "c_call" => ffi::PyTrace_C_CALL,
        "c_return" => ffi::PyTrace_C_RETURN,
        "c_exception" => ffi::PyTrace_C_EXCEPTION,
        "line" => ffi::PyTrace_LINE,
        _ => return None,
    })
}

#[pymethods]
impl ProfileHook {
    /// Behaves like a Python profile function: `(frame, event, arg)`.
    fn __call__(&self, frame: &Bound<'_, PyAny>, event: &str, arg: &Bound<'_, PyAny>) {
        if let Some(what) = event_code(event) {
            // A Python-level "return" carries None when unwinding too; we
            // cannot tell the two apart here, so both are returns.
            dispatch_profile(frame.as_ptr(), what, arg.as_ptr());
        }
    }
}

#[pymethods]
impl TraceHook {
    /// Behaves like a Python trace function; returns itself so the
    /// interpreter keeps it as the frame's local trace function.
    fn __call__(
        slf: Py<Self>,
        frame: &Bound<'_, PyAny>,
        event: &str,
        _arg: &Bound<'_, PyAny>,
    ) -> Py<Self> {
        if event == "line" {
            record_line(frame.as_ptr());
        }
        slf
    }
}

#[inline(always)]
fn dispatch_profile(frame: *mut ffi::PyObject, what: c_int, arg: *mut ffi::PyObject) {
    match what {
        ffi::PyTrace_CALL => {
            // SAFETY: `frame` is a live frame object (GIL held); the code
            // reference we get is released right after use.
            #[allow(unsafe_code)]
            unsafe {
                let code = ffi::PyFrame_GetCode(frame.cast());
                hook::on_call(code.cast(), frame);
                // Inline, unlike Py_DecRef; never the last reference: the
                // frame holds its code.
                ffi::Py_DECREF(code.cast());
            }
        }
        ffi::PyTrace_RETURN if arg.is_null() => hook::on_return(Kind::Exception, arg),
        ffi::PyTrace_RETURN => hook::on_return(Kind::Return, arg),
        ffi::PyTrace_C_CALL if C_CALLS.load(Ordering::Relaxed) => {
            hook::on_c_call(arg, ptr::null_mut())
        }
        ffi::PyTrace_C_RETURN | ffi::PyTrace_C_EXCEPTION => hook::on_c_return(),
        _ => {}
    }
}

fn record_line(frame: *mut ffi::PyObject) {
    // SAFETY: `frame` is a live frame object (GIL held); the code reference
    // is released right after use.
    #[allow(unsafe_code)]
    unsafe {
        let line = ffi::PyFrame_GetLineNumber(frame.cast());
        let code = ffi::PyFrame_GetCode(frame.cast());
        hook::on_line(code.cast(), line.max(0) as u32);
        ffi::Py_DecRef(code.cast());
    }
}

/// The C profile function.
#[allow(unsafe_code)]
unsafe extern "C" fn profile(
    _obj: *mut ffi::PyObject,
    frame: *mut ffi::PyFrameObject,
    what: c_int,
    arg: *mut ffi::PyObject,
) -> c_int {
    #[cfg(not(Py_3_12))]
    if what == ffi::PyTrace_CALL && frame_code::in_place() {
        // SAFETY: the interpreter's own frame object, GIL held.
        let code = unsafe { frame_code::read(frame.cast()) };
        hook::on_call(code, frame.cast());
        return 0;
    }
    dispatch_profile(frame.cast(), what, arg);
    0
}

/// A frame's code read in place on 3.11 (`frame->f_frame->f_code`), so
/// that the profile hook's call event does without `PyFrame_GetCode` — a
/// call into the interpreter, and a reference taken and dropped. The
/// offsets are those of 3.11's headers, checked against `PyFrame_GetCode`
/// on a live frame when the hook is installed; if they disagree,
/// `PyFrame_GetCode` it is.
#[cfg(not(Py_3_12))]
pub mod frame_code {
    use std::sync::atomic::{AtomicBool, Ordering};

    use pyo3::ffi;
    use pyo3::prelude::*;

    /// `offsetof(PyFrameObject, f_frame)`.
    const F_FRAME: usize = 24;
    /// `offsetof(_PyInterpreterFrame, f_code)`.
    const F_CODE: usize = 32;

    static IN_PLACE: AtomicBool = AtomicBool::new(false);

    /// Whether `read` may be used (after `check`).
    #[inline(always)]
    pub fn in_place() -> bool {
        IN_PLACE.load(Ordering::Relaxed)
    }

    /// The code of `frame`, borrowed (the frame holds it).
    ///
    /// # Safety
    /// `frame` is a live frame object handed over by the interpreter, the
    /// GIL is held, and `check` found the offsets right.
    #[allow(unsafe_code)]
    #[inline(always)]
    pub unsafe fn read(frame: *mut ffi::PyObject) -> *mut ffi::PyObject {
        // SAFETY: the caller's contract: `f_frame` and `f_code` are at
        // these offsets, and a running frame's interpreter frame is live.
        unsafe {
            let iframe = *frame.cast::<u8>().add(F_FRAME).cast::<*const u8>();
            *iframe.add(F_CODE).cast::<*mut ffi::PyObject>()
        }
    }

    /// Checks the offsets on the caller's frame, once per process.
    pub fn check(py: Python<'_>) -> bool {
        static CHECKED: std::sync::Once = std::sync::Once::new();
        CHECKED.call_once(|| IN_PLACE.store(agrees_with_api(py), Ordering::Relaxed));
        in_place()
    }

    fn agrees_with_api(py: Python<'_>) -> bool {
        let Ok(frame) = py
            .import("sys")
            .and_then(|sys| sys.getattr("_getframe")?.call0())
        else {
            return false;
        };
        let frame = frame.as_ptr();
        // SAFETY: a live object; the reads stay inside a frame object's
        // fixed part (checked against its type's size) and, through
        // `f_frame`, inside the running frame's interpreter frame.
        #[allow(unsafe_code)]
        unsafe {
            if ffi::PyFrame_Check(frame) == 0
                || ((*ffi::Py_TYPE(frame)).tp_basicsize as usize) < F_FRAME + 8
                || (*frame.cast::<u8>().add(F_FRAME).cast::<*const u8>()).is_null()
            {
                return false;
            }
            let api = ffi::PyFrame_GetCode(frame.cast());
            ffi::Py_DecRef(api.cast());
            read(frame) == api.cast()
        }
    }
}

/// The C trace function: records lines, keeps `f_trace` current.
#[allow(unsafe_code)]
unsafe extern "C" fn trace(
    obj: *mut ffi::PyObject,
    frame: *mut ffi::PyFrameObject,
    what: c_int,
    _arg: *mut ffi::PyObject,
) -> c_int {
    match what {
        ffi::PyTrace_CALL => set_f_trace(frame.cast(), obj),
        ffi::PyTrace_LINE => record_line(frame.cast()),
        _ => {}
    }
    0
}

/// `frame.f_trace = obj`.
fn set_f_trace(frame: *mut ffi::PyObject, obj: *mut ffi::PyObject) {
    // SAFETY: trace functions run with the GIL held.
    #[allow(unsafe_code)]
    let py = unsafe { Python::assume_gil_acquired() };
    let name = intern!(py, "f_trace");
    // SAFETY: `frame` and `obj` are live objects; a failure sets an error
    // that we clear (the frame simply keeps its old f_trace).
    #[allow(unsafe_code)]
    unsafe {
        if ffi::PyObject_SetAttr(frame, name.as_ptr(), obj) != 0 {
            ffi::PyErr_Clear();
        }
    }
}

fn hook_objects(py: Python<'_>) -> PyResult<(*mut ffi::PyObject, *mut ffi::PyObject)> {
    let p = PROFILE_HOOK.get_or_try_init(py, || Py::new(py, ProfileHook))?;
    let t = TRACE_HOOK.get_or_try_init(py, || Py::new(py, TraceHook))?;
    Ok((p.as_ptr(), t.as_ptr()))
}

/// Installs (or with `on=false` removes) the hooks on every thread.
#[pyfunction]
#[pyo3(signature = (*, on, lines, c_calls))]
pub fn set_legacy_all_threads(
    py: Python<'_>,
    on: bool,
    lines: bool,
    c_calls: bool,
) -> PyResult<()> {
    C_CALLS.store(c_calls, Ordering::Relaxed);
    #[cfg(not(Py_3_12))]
    frame_code::check(py);
    let (p, t) = hook_objects(py)?;
    let (p, t) = if on {
        (p, t)
    } else {
        (ptr::null_mut(), ptr::null_mut())
    };
    let profile_fn = on.then_some(profile as ffi::Py_tracefunc);
    let trace_fn = on.then_some(trace as ffi::Py_tracefunc);
    set_all(py, profile_fn, p, false)?;
    if lines {
        set_all(py, trace_fn, t, true)?;
        if on {
            keep_f_trace_on_running_frames(py, t);
        }
    }
    if on {
        crate::adopt::arm(profile, p, lines);
    } else {
        crate::adopt::disarm();
    }
    Ok(())
}

/// Installs the hooks on one thread state that has none (see `adopt`).
/// If the interpreter refuses (an audit hook raised), the error is
/// cleared and the thread stays unrecorded.
pub fn install_on(py: Python<'_>, tstate: *mut ffi::PyThreadState, lines: bool) {
    let Ok((p, t)) = hook_objects(py) else {
        return;
    };
    // SAFETY: GIL held, so `tstate` is alive and its thread paused at a
    // safe point (as in `set_all`); the objects are kept alive by statics.
    #[allow(unsafe_code)]
    let status = unsafe { crate::ffi::_PyEval_SetProfile(tstate, Some(profile), p) };
    // 3.13 does not export `_PyEval_SetTrace`: an adopted thread's lines
    // are not recorded there.
    #[cfg(not(Py_3_13))]
    let status = if status == 0 && lines {
        // SAFETY: as above.
        #[allow(unsafe_code)]
        let traced = unsafe { crate::ffi::_PyEval_SetTrace(tstate, Some(trace), t) };
        if traced == 0 {
            set_f_trace_on_stack(tstate, t);
        }
        traced
    } else {
        status
    };
    #[cfg(Py_3_13)]
    let _ = (lines, t);
    if status != 0 {
        // SAFETY: GIL held; the failed call set an error.
        #[allow(unsafe_code)]
        unsafe {
            ffi::PyErr_Clear()
        };
    }
}

/// Installs (or removes) the hooks on the calling thread only.
#[pyfunction]
#[pyo3(signature = (*, on, lines))]
pub fn set_legacy_current_thread(py: Python<'_>, on: bool, lines: bool) -> PyResult<()> {
    #[cfg(not(Py_3_12))]
    frame_code::check(py);
    let (p, t) = hook_objects(py)?;
    // SAFETY: GIL held; the argument objects are kept alive by statics.
    #[allow(unsafe_code)]
    unsafe {
        if on {
            ffi::PyEval_SetProfile(Some(profile), p);
            if lines {
                ffi::PyEval_SetTrace(Some(trace), t);
            }
        } else {
            crate::adopt::disarm();
            ffi::PyEval_SetProfile(None, ptr::null_mut());
            if lines {
                ffi::PyEval_SetTrace(None, ptr::null_mut());
            }
        }
    }
    if on && lines {
        // SAFETY: GIL held.
        #[allow(unsafe_code)]
        let tstate = unsafe { ffi::PyThreadState_Get() };
        set_f_trace_on_stack(tstate, t);
    }
    Ok(())
}

/// Forwards one event that reached the Python-level thread installer.
#[pyfunction]
pub fn legacy_event(frame: &Bound<'_, PyAny>, event: &str, arg: &Bound<'_, PyAny>) {
    if let Some(what) = event_code(event) {
        dispatch_profile(frame.as_ptr(), what, arg.as_ptr());
    }
}

#[cfg(Py_3_12)]
fn set_all(
    _py: Python<'_>,
    func: Option<ffi::Py_tracefunc>,
    obj: *mut ffi::PyObject,
    trace: bool,
) -> PyResult<()> {
    // SAFETY: GIL held; `obj` is kept alive by a static (or is NULL).
    #[allow(unsafe_code)]
    unsafe {
        if trace {
            crate::ffi::PyEval_SetTraceAllThreads(func, obj);
        } else {
            crate::ffi::PyEval_SetProfileAllThreads(func, obj);
        }
    }
    Ok(())
}

#[cfg(not(Py_3_12))]
fn set_all(
    py: Python<'_>,
    func: Option<ffi::Py_tracefunc>,
    obj: *mut ffi::PyObject,
    trace: bool,
) -> PyResult<()> {
    for tstate in thread_states() {
        // SAFETY: GIL held, so every thread state in the list is alive and
        // paused at a safe point; `obj` is kept alive by a static.
        #[allow(unsafe_code)]
        let status = unsafe {
            if trace {
                crate::ffi::_PyEval_SetTrace(tstate, func, obj)
            } else {
                crate::ffi::_PyEval_SetProfile(tstate, func, obj)
            }
        };
        if status != 0 {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(())
}

/// Every thread state of this interpreter.
pub fn thread_states() -> Vec<*mut ffi::PyThreadState> {
    let mut states = Vec::new();
    // SAFETY: called with the GIL held, so the list cannot change under us.
    #[allow(unsafe_code)]
    unsafe {
        let mut tstate = ffi::PyInterpreterState_ThreadHead(ffi::PyInterpreterState_Get());
        while !tstate.is_null() {
            states.push(tstate);
            tstate = ffi::PyThreadState_Next(tstate);
        }
    }
    states
}

fn keep_f_trace_on_running_frames(_py: Python<'_>, obj: *mut ffi::PyObject) {
    for tstate in thread_states() {
        set_f_trace_on_stack(tstate, obj);
    }
}

/// Sets `f_trace` on every frame of a thread's stack, so a later
/// `sys.settrace(sys.gettrace())` keeps their line events.
fn set_f_trace_on_stack(tstate: *mut ffi::PyThreadState, obj: *mut ffi::PyObject) {
    // SAFETY: GIL held; each frame reference we receive is released after
    // we are done with it.
    #[allow(unsafe_code)]
    unsafe {
        let mut frame = ffi::PyThreadState_GetFrame(tstate);
        while !frame.is_null() {
            set_f_trace(frame.cast(), obj);
            let back = ffi::PyFrame_GetBack(frame);
            ffi::Py_DecRef(frame.cast());
            frame = back;
        }
    }
}
