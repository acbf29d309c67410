//! The recording hot path, shared by both hook mechanisms (`sys.monitoring`
//! and the legacy profile/trace functions).
//!
//! Every entry point here runs with the GIL held and is never re-entered:
//! the interpreter suspends monitoring and profiling while a hook runs. That
//! is what makes the lock-free per-thread state sound; see `Slot`.
//!
//! Per event: one atomic load (the session), a compare with the thread
//! that recorded last (`last_thread`; a thread-local access when another
//! thread did), one code-object extra-slot read (the function id), one
//! counter read and one 16-byte store. No allocation, lock, Python call or
//! syscall, except on first sight of a function or thread and when a
//! buffer is handed over. The common events take fast paths
//! (`call_fast`, `return_fast`, `c_call_fast`, `c_return_fast`) that make
//! no call at all, so that the compiler saves no registers for them;
//! whatever they do not handle goes to the general path, unchanged.
//!
//! A recording with filters takes the filtered path (`calls`) at each entry
//! point instead; one without pays a single branch for it. With
//! `log_args`, an entry point that needs a repr (Python code) makes it only
//! after its per-thread borrow has ended (`answer_call`, `answer_return`).

use std::cell::UnsafeCell;
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rtrace::clock::{ticks, tsc_ticks};
use rtrace::mark::Payload;
use rtrace::{FunctionId, FunctionInfo, Kind, RawEvent, Recorder, ThreadBuffer};

/// The OS thread id of the calling thread (`hook::current_tid` to the rest
/// of the extension).
pub use rtrace::sched::current_tid;

use crate::args::Ask;
use crate::calls::{self, MarkFate, OpenCalls, Sampling};
use crate::code_extra::CodeExtra;
use crate::filter::{self, Decision, Filters, ARGS_BIT, EXCLUDED};
use crate::gil::GilCell;
use crate::last_thread;

/// Marks a C function's entry on a thread's call stack.
pub const C_BIT: u32 = 1 << 31;

/// Calls of a new thread on which its name is looked up (see `name_tries`).
const NAME_TRIES: u8 = 64;

/// Stands for rtrace's own functions, and everything they call: such calls
/// are tracked on the stack (to keep nesting right) but not recorded.
pub const SUPPRESSED: FunctionId = FunctionId(rtrace::event::MAX_FUNCTION_ID);

/// Entries of `Session::recent_c_functions` (a power of two).
const RECENT_C_FUNCTIONS: usize = 256;

/// Module of rtrace's extension functions.
const NATIVE_MODULE: &str = "rtrace._native";

const _: () = assert!(
    std::mem::size_of::<usize>() == 8,
    "rtrace needs 64-bit pointers"
);

/// One recording: the recorder plus what the hook needs to stamp events.
pub struct Session {
    pub recorder: Recorder,
    /// Distinguishes this recording's function ids (kept in code objects'
    /// extra slots) and thread slots from an earlier recording's.
    pub generation: u32,
    /// Where each code object keeps its function id.
    pub extra: CodeExtra,
    /// Record only this thread (`threads=False`).
    pub only_tid: Option<u64>,
    /// `sys.monitoring.MISSING`: a method call without arguments.
    pub missing: *mut ffi::PyObject,
    /// `threading._active`, to name threads on first sight.
    pub threading_active: Option<Py<PyDict>>,
    /// rtrace's own source files: their functions are not recorded.
    pub internal_files: Vec<String>,
    /// What to leave out; `None` keeps the hook on its plain path.
    filters: Option<Py<Filters>>,
    /// rtrace frames on the starting thread's stack when the hook goes
    /// live: their returns and what they call are not recorded.
    starting_depth: (u64, AtomicU32),
    slots: Mutex<Vec<Arc<Slot>>>,
    c_functions: GilCell<HashMap<usize, FunctionId, BuildHasherDefault<AddressHasher>>>,
    /// The C functions met last, by method table entry, direct-mapped:
    /// what `c_call_fast` finds without a call.
    recent_c_functions: GilCell<[(usize, FunctionId); RECENT_C_FUNCTIONS]>,
    fallback_id: FunctionId,
    /// The newest counter value the writer promised complete (see
    /// `sweep_idle`): a user event stamped before it but recorded after it
    /// (its arguments' repr ran Python, which let the tick run) is recorded
    /// at this time instead, so that the promise holds.
    promised: AtomicU64,
    /// Threads named with `rtrace.name_thread`: `threading`'s names do not
    /// replace theirs.
    pub user_named: Mutex<HashSet<u64>>,
}

// SAFETY: `missing` is an immortal-for-our-purposes object we hold a strong
// reference to through the Python side for the session's lifetime, and is
// only compared by address; the rest is Send + Sync by construction.
#[allow(unsafe_code)]
unsafe impl Send for Session {}
// SAFETY: see above; shared access to `c_functions` goes through GilCell.
#[allow(unsafe_code)]
unsafe impl Sync for Session {}

impl Session {
    /// A session over a started recorder.
    pub fn new(
        recorder: Recorder,
        generation: u32,
        extra: CodeExtra,
        only_tid: Option<u64>,
        missing: *mut ffi::PyObject,
        threading_active: Option<Py<PyDict>>,
        internal_files: Vec<String>,
    ) -> Session {
        let fallback_id = recorder.next_function_id().unwrap_or(FunctionId(0));
        recorder.intern_function(FunctionInfo {
            id: fallback_id,
            name: "<unnamed>".into(),
            module: String::new(),
            file: String::new(),
            line: 0,
            native: false,
        });
        Session {
            recorder,
            generation,
            extra,
            only_tid,
            missing,
            threading_active,
            internal_files,
            filters: None,
            starting_depth: (current_tid(), AtomicU32::new(0)),
            slots: Mutex::new(Vec::new()),
            c_functions: GilCell::new(HashMap::default()),
            recent_c_functions: GilCell::new([(0, FunctionId(0)); RECENT_C_FUNCTIONS]),
            fallback_id,
            promised: AtomicU64::new(0),
            user_named: Mutex::new(HashSet::new()),
        }
    }

    /// The session with `filters` applied (before it is activated).
    pub fn with_filters(mut self, filters: Option<Py<Filters>>) -> Session {
        self.filters = filters;
        self
    }

    /// Hands every thread's waiting events to the writer. With `retire`,
    /// the threads' slots are closed for good (stop), and calls still open
    /// are closed at this moment, so every call has its return; without,
    /// they keep recording (before `fork()`). Call with the GIL held.
    pub fn sweep(&self, retire: bool) {
        if retire {
            last_thread::forget_all();
        }
        let now = ticks();
        self.for_each_live_thread(|state| {
            if retire {
                match self.filters() {
                    None => state.close_open_calls(self, now),
                    Some(f) => calls::close_open_calls(self, f, state, now),
                }
            }
            self.recorder.hand_over(&mut state.buf);
            state.retired = retire;
        });
    }

    /// Runs `f` on the state of every thread not yet retired. Call with
    /// the GIL held.
    fn for_each_live_thread(&self, mut f: impl FnMut(&mut SlotState)) {
        let Ok(slots) = self.slots.lock() else { return };
        for slot in slots.iter() {
            let Ok(_exit) = slot.exit_lock.lock() else {
                continue;
            };
            // SAFETY: we hold the GIL (no hook runs) and the slot's exit
            // lock (its thread is not running its exit hand-over).
            #[allow(unsafe_code)]
            let state = unsafe { &mut *slot.state.get() };
            if !state.retired {
                f(state);
            }
        }
    }

    /// Offers every thread's waiting events to the writer without ever
    /// blocking: the writer thread calls this on each flush tick, so that
    /// a thread blocked in a C call (a worker waiting for its next task)
    /// does not keep its events until its next call. Call with the GIL
    /// held.
    ///
    /// Returns the counter value before which every event of the
    /// recording has now been handed over (the writer's promise to the
    /// collector, see `Recorder::set_tick`), or `None` when a buffer found
    /// no room in the queue. Holding the GIL, no other thread is between
    /// stamping an event and storing it, except where Python runs in
    /// between: calls and returns waiting for their text or duration
    /// (`OpenCalls::unwritten_since`) and user events (`promised`).
    pub fn sweep_idle(&self) -> Option<u64> {
        let mut complete = Some(ticks());
        self.for_each_live_thread(|state| {
            if !state.buf.is_empty() && !self.recorder.offer(&mut state.buf) {
                complete = None;
            }
            if let (Some(c), Some(t)) = (complete, state.calls.unwritten_since()) {
                complete = Some(c.min(t));
            }
        });
        if let Some(c) = complete {
            self.promised.fetch_max(c, Ordering::Relaxed);
        }
        complete
    }

    /// The recording's filters, if it has any.
    #[inline(always)]
    pub fn filters(&self) -> Option<&Filters> {
        self.filters.as_ref().map(Py::get)
    }

    /// The function id of a code object, interning it on first sight
    /// (with filters: maybe `EXCLUDED`, maybe with `ARGS_BIT`).
    #[inline]
    fn code_id(&self, code: *mut ffi::PyObject) -> FunctionId {
        let value = self.extra.get(code);
        if value != 0 && (value >> 32) as u32 == self.generation {
            return FunctionId(value as u32);
        }
        self.intern_code(code)
    }

    #[cold]
    fn intern_code(&self, code: *mut ffi::PyObject) -> FunctionId {
        // SAFETY: hooks run with the GIL held.
        #[allow(unsafe_code)]
        let py = unsafe { Python::assume_gil_acquired() };
        // SAFETY: `code` is a live object borrowed from the interpreter.
        #[allow(unsafe_code)]
        let code_obj = unsafe { Bound::from_borrowed_ptr(py, code) };
        let text = |attr: &str| {
            code_obj
                .getattr(attr)
                .and_then(|v| v.extract::<String>())
                .unwrap_or_default()
        };
        let file = text("co_filename");
        let id = if self.internal_files.contains(&file) {
            SUPPRESSED
        } else {
            self.intern_new_code(py, &code_obj, file)
        };
        let value = (u64::from(self.generation) << 32) | u64::from(id.0);
        self.extra.set(code, value);
        id
    }

    fn intern_new_code(
        &self,
        py: Python<'_>,
        code_obj: &Bound<'_, PyAny>,
        file: String,
    ) -> FunctionId {
        let text = |attr: &str| {
            code_obj
                .getattr(attr)
                .and_then(|v| v.extract::<String>())
                .unwrap_or_default()
        };
        let name = text("co_qualname");
        let module = current_module(py);
        let decision = self.filters().map(|f| {
            f.decide(&filter::Function {
                module: &module,
                name: &name,
                file: &file,
            })
        });
        let args_bit = match decision {
            Some(Decision::Exclude) => return EXCLUDED,
            Some(Decision::Record { args: true }) => ARGS_BIT,
            _ => 0,
        };
        let Some(id) = self.recorder.next_function_id() else {
            return self.fallback_id;
        };
        self.recorder.intern_function(FunctionInfo {
            id,
            name,
            module,
            file,
            line: code_obj
                .getattr("co_firstlineno")
                .and_then(|v| v.extract())
                .unwrap_or(0),
            native: false,
        });
        FunctionId(id.0 | args_bit)
    }

    /// The function id of a C callable, interning it on first sight.
    pub(crate) fn c_function_id(&self, callable: CCallable) -> FunctionId {
        let key = callable.method_def() as usize;
        let id = self.c_function_id_by_key(callable, key);
        // SAFETY: GIL held (a hook); no other borrow of the cell is alive.
        #[allow(unsafe_code)]
        let recent = unsafe { self.recent_c_functions.get() };
        recent[recent_c_slot(key)] = (key, id);
        id
    }

    /// The id of a C function met recently (see `recent_c_functions`).
    #[inline(always)]
    fn recent_c_function_id(&self, callable: CCallable) -> Option<FunctionId> {
        let key = callable.method_def() as usize;
        // SAFETY: GIL held (a hook); no other borrow of the cell is alive.
        #[allow(unsafe_code)]
        let recent = unsafe { self.recent_c_functions.get() };
        let (known, id) = recent[recent_c_slot(key)];
        (known == key).then_some(id)
    }

    fn c_function_id_by_key(&self, callable: CCallable, key: usize) -> FunctionId {
        // SAFETY: GIL held; no Python code runs while the map is borrowed
        // (interning only reads C structures and dicts).
        #[allow(unsafe_code)]
        let map = unsafe { self.c_functions.get() };
        if let Some(&id) = map.get(&key) {
            return id;
        }
        let (module, name) = callable.names();
        if module == NATIVE_MODULE {
            // rtrace's own entry points (rtrace.instant, ...) record what
            // they are for, not themselves.
            map.insert(key, SUPPRESSED);
            return SUPPRESSED;
        }
        if let Some(f) = self.filters() {
            // SAFETY: hooks run with the GIL held.
            #[allow(unsafe_code)]
            let py = unsafe { Python::assume_gil_acquired() };
            let function = filter::Function {
                module: &module,
                name: &name,
                file: "",
            };
            if f.decide_native(py, &function) == Decision::Exclude {
                map.insert(key, EXCLUDED);
                return EXCLUDED;
            }
        }
        let Some(id) = self.recorder.next_function_id() else {
            return self.fallback_id;
        };
        self.recorder.intern_function(FunctionInfo {
            id,
            name,
            module,
            file: String::new(),
            line: 0,
            native: true,
        });
        map.insert(key, id);
        id
    }

    /// Sends the current thread's name if `threading` knows it yet.
    fn try_name_thread(&self, tid: u64) -> bool {
        let Some(active) = &self.threading_active else {
            return true;
        };
        // SAFETY: hooks run with the GIL held.
        #[allow(unsafe_code)]
        let py = unsafe { Python::assume_gil_acquired() };
        // SAFETY: pthread_self has no preconditions; CPython's thread ident
        // on Linux is this value.
        #[allow(unsafe_code)]
        let ident = unsafe { libc::pthread_self() } as u64;
        let Ok(Some(thread)) = active.bind(py).get_item(ident) else {
            return false;
        };
        match thread.getattr("_name").and_then(|n| n.extract::<String>()) {
            Ok(name) => {
                self.recorder.name_thread(tid, name);
                true
            }
            Err(_) => false,
        }
    }

    /// Declares how many rtrace frames the calling (starting) thread has
    /// on its stack as the hook goes live.
    pub fn set_starting_depth(&self, depth: u32) {
        self.starting_depth.1.store(depth, Ordering::Relaxed);
    }

    fn new_slot(self: &Arc<Self>) -> Arc<Slot> {
        let tid = current_tid();
        let ignored = self.only_tid.is_some_and(|only| only != tid);
        let suppressed = if tid == self.starting_depth.0 {
            self.starting_depth.1.swap(0, Ordering::Relaxed)
        } else {
            0
        };
        let mut stack = vec![SUPPRESSED.0; suppressed as usize];
        stack.reserve(256);
        let slot = Arc::new(Slot {
            generation: self.generation,
            state: UnsafeCell::new(SlotState {
                buf: self.recorder.new_thread_buffer(tid),
                stack,
                calls: OpenCalls::default(),
                suppressed,
                sampling: Sampling::default(),
                ignored,
                name_tries: if ignored { 0 } else { NAME_TRIES },
                retired: false,
            }),
            exit_lock: Mutex::new(()),
            session: Arc::downgrade(self),
        });
        if let Ok(mut slots) = self.slots.lock() {
            slots.push(slot.clone());
        }
        slot
    }
}

/// The slot of `recent_c_functions` for a method table entry's address:
/// its top bits after a Fibonacci multiply.
#[inline(always)]
fn recent_c_slot(key: usize) -> usize {
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_C_FUNCTIONS.trailing_zeros()))
        as usize
}

/// Hashes an address with a multiply and a fold: the C function map is
/// looked up on every C call that `recent_c_functions` misses, where
/// SipHash (the default, built against attackers choosing keys, which
/// addresses are not) cost more than the rest of the event.
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; the fold brings high bits down to the bucket
        // index (addresses of method tables share their low bits).
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// `__name__` of the running frame's globals (the module being entered).
fn current_module(py: Python<'_>) -> String {
    // SAFETY: GIL held; returns a borrowed reference or NULL.
    #[allow(unsafe_code)]
    let globals = unsafe { ffi::PyEval_GetGlobals() };
    if globals.is_null() {
        return String::new();
    }
    // SAFETY: non-null borrowed reference to a live dict.
    #[allow(unsafe_code)]
    let globals = unsafe { Bound::from_borrowed_ptr(py, globals) };
    globals
        .get_item("__name__")
        .and_then(|n| n.extract::<String>())
        .unwrap_or_default()
}

/// A callable that the hook records as a C call.
#[derive(Clone, Copy)]
pub enum CCallable {
    /// A `builtin_function_or_method`.
    Function(*mut ffi::PyCFunctionObject),
    /// A method descriptor called with its `self` (`list.append(xs, 1)`).
    Descriptor(*mut ffi::PyMethodDescrObject),
}

impl CCallable {
    /// Classifies a callable; `None` for anything not implemented in C.
    /// `self_arg` is the first argument (or `missing` when there is none).
    #[inline]
    pub fn classify(
        callable: *mut ffi::PyObject,
        self_arg: *mut ffi::PyObject,
        missing: *mut ffi::PyObject,
    ) -> Option<CCallable> {
        if let Some(known) = CCallable::classify_exact(callable, self_arg, missing) {
            return known;
        }
        // SAFETY: `callable` is a live object from the interpreter.
        #[allow(unsafe_code)]
        unsafe {
            if ffi::PyCFunction_Check(callable) != 0 {
                return Some(CCallable::Function(callable.cast()));
            }
            let descr_type = ptr::addr_of_mut!(ffi::PyMethodDescr_Type);
            if ffi::Py_TYPE(callable) == descr_type && !self_arg.is_null() && self_arg != missing {
                return Some(CCallable::Descriptor(callable.cast()));
            }
        }
        None
    }

    /// `classify` for the callables met most, by their exact type, with
    /// no call (`PyCFunction_Check` asks `PyType_IsSubtype` for anything
    /// else): `Some(None)` for a Python function or method, `None` for a
    /// type not listed here.
    #[inline(always)]
    pub fn classify_exact(
        callable: *mut ffi::PyObject,
        self_arg: *mut ffi::PyObject,
        missing: *mut ffi::PyObject,
    ) -> Option<Option<CCallable>> {
        // SAFETY: `callable` is a live object from the interpreter; the
        // type objects are statics of the interpreter, only their
        // addresses are taken.
        #[allow(unsafe_code)]
        unsafe {
            let tp = ffi::Py_TYPE(callable);
            if tp == ptr::addr_of_mut!(ffi::PyCFunction_Type)
                || tp == ptr::addr_of_mut!(ffi::PyCMethod_Type)
            {
                return Some(Some(CCallable::Function(callable.cast())));
            }
            if tp == ptr::addr_of_mut!(ffi::PyMethodDescr_Type) {
                let bound = !self_arg.is_null() && self_arg != missing;
                return Some(bound.then_some(CCallable::Descriptor(callable.cast())));
            }
        }
        CCallable::is_python_exact(callable).then_some(None)
    }

    /// True for a Python function or bound method, by exact type.
    #[inline(always)]
    pub fn is_python_exact(callable: *mut ffi::PyObject) -> bool {
        // SAFETY: `callable` is a live object from the interpreter; only
        // the type objects' addresses are taken.
        #[allow(unsafe_code)]
        unsafe {
            let tp = ffi::Py_TYPE(callable);
            tp == ptr::addr_of_mut!(ffi::PyFunction_Type)
                || tp == ptr::addr_of_mut!(crate::ffi::PyMethod_Type)
        }
    }

    #[inline]
    fn method_def(self) -> *mut ffi::PyMethodDef {
        // SAFETY: `classify` checked the object's type, so the cast layout
        // is right; the object is alive for the duration of the hook.
        #[allow(unsafe_code)]
        unsafe {
            match self {
                CCallable::Function(f) => (*f).m_ml,
                CCallable::Descriptor(d) => (*d).d_method,
            }
        }
    }

    /// (module, qualified name), e.g. ("builtins", "len") or ("", "list.append").
    fn names(self) -> (String, String) {
        // SAFETY: as in `method_def`; names are NUL-terminated C strings
        // owned by static method tables and type objects.
        #[allow(unsafe_code)]
        unsafe {
            let ml_name = cstr((*self.method_def()).ml_name);
            match self {
                CCallable::Function(f) => {
                    let owner = (*f).m_self;
                    if owner.is_null() || ffi::PyModule_Check(owner) != 0 {
                        (module_of(f), ml_name)
                    } else {
                        split_type_name(cstr((*ffi::Py_TYPE(owner)).tp_name), &ml_name)
                    }
                }
                CCallable::Descriptor(d) => {
                    let owner = (*d).d_common.d_type;
                    split_type_name(cstr((*owner).tp_name), &ml_name)
                }
            }
        }
    }
}

/// The `__module__` string of a builtin function, if it has one.
///
/// # Safety
/// `f` is a live `PyCFunctionObject` and the GIL is held.
#[allow(unsafe_code)]
unsafe fn module_of(f: *mut ffi::PyCFunctionObject) -> String {
    // SAFETY: the caller's contract.
    let module = unsafe { (*f).m_module };
    // SAFETY: a non-null m_module is a live object; only str is read.
    if module.is_null() || unsafe { ffi::PyUnicode_Check(module) } == 0 {
        return String::new();
    }
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `module` is a str; the returned buffer lives as long as it.
    let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(module, &mut len) };
    if data.is_null() {
        // SAFETY: GIL held; clears the encoding error.
        unsafe { ffi::PyErr_Clear() };
        return String::new();
    }
    // SAFETY: `data` points at `len` valid UTF-8 bytes.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads a C string (NULL gives "").
///
/// # Safety
/// `p` is NULL or points at a NUL-terminated string.
#[allow(unsafe_code)]
unsafe fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// "collections.OrderedDict" + "pop" → ("collections", "OrderedDict.pop").
fn split_type_name(tp_name: String, method: &str) -> (String, String) {
    match tp_name.rsplit_once('.') {
        Some((module, ty)) => (module.to_owned(), format!("{ty}.{method}")),
        None => ("builtins".to_owned(), format!("{tp_name}.{method}")),
    }
}

/// The recording state of one thread.
///
/// Soundness: `state` is touched (1) by its own thread inside a hook, with
/// the GIL held; (2) by `Session::sweep`, with the GIL and `exit_lock`
/// held; (3) by its own thread's exit hand-over, with `exit_lock` held and
/// after its last hook. (1)/(2) are serialised by the GIL, (2)/(3) by the
/// lock, and (1)/(3) are the same thread in sequence.
pub struct Slot {
    generation: u32,
    state: UnsafeCell<SlotState>,
    exit_lock: Mutex<()>,
    session: Weak<Session>,
}

// SAFETY: see the soundness note on `Slot`.
#[allow(unsafe_code)]
unsafe impl Sync for Slot {}
// SAFETY: the state holds only owned data.
#[allow(unsafe_code)]
unsafe impl Send for Slot {}

pub struct SlotState {
    pub buf: ThreadBuffer,
    /// Ids of the calls open on this thread; C calls carry `C_BIT`.
    pub stack: Vec<u32>,
    /// With filters: the recorded calls among them (see `calls`).
    pub calls: OpenCalls,
    /// Open calls of rtrace's own code (and what they call): while above
    /// zero, nothing is recorded.
    pub suppressed: u32,
    /// With `sample`: how user events are sampled here (see `calls::admit_mark`).
    pub sampling: Sampling,
    ignored: bool,
    /// Calls left on which to look the thread's name up in `threading`
    /// (0: named, or given up — a thread `threading` never registers must
    /// not pay a lookup per call for ever).
    name_tries: u8,
    retired: bool,
}

impl SlotState {
    #[inline]
    fn record(&mut self, session: &Session, event: RawEvent) {
        if self.buf.push(event) {
            self.hand_over(session);
        }
    }

    /// Records a call of `id` (a C call with `c_bit`) and opens it on the
    /// stack, making no call: false, having changed nothing, when that
    /// needs the general path (no room on the stack or in the buffer, a
    /// clock other than the TSC).
    #[inline(always)]
    fn open_fast(&mut self, id: FunctionId, kind: Kind, c_bit: u32) -> bool {
        let depth = self.stack.len();
        if depth == self.stack.capacity() {
            return false;
        }
        let Some(t) = tsc_ticks() else { return false };
        if !self.buf.try_push(RawEvent::new(t, id, kind, 0)) {
            return false;
        }
        // Not `push`: it would check the capacity again and keep a call
        // to grow the stack, and with that call the registers the fast
        // paths save.
        // SAFETY: depth < capacity (checked above, and nothing touched the
        // stack since): the slot is allocated, and it is initialised
        // before the length covers it.
        #[allow(unsafe_code)]
        unsafe {
            self.stack.as_mut_ptr().add(depth).write(id.0 | c_bit);
            self.stack.set_len(depth + 1);
        }
        true
    }

    /// Records the return of the call on top of the stack, `id`, and
    /// closes it, making no call: false, having changed nothing, when that
    /// needs the general path (see `open_fast`).
    #[inline(always)]
    fn close_fast(&mut self, id: FunctionId, kind: Kind) -> bool {
        let Some(t) = tsc_ticks() else { return false };
        if !self.buf.try_push(RawEvent::new(t, id, kind, 0)) {
            return false;
        }
        self.stack.pop();
        true
    }

    /// Opens a call whose events are not recorded, nor those of what it
    /// calls.
    pub fn suppress(&mut self, c_bit: u32) {
        self.suppressed += 1;
        self.stack.push(SUPPRESSED.0 | c_bit);
    }

    /// Ends a suppressed call (its stack entry already popped).
    pub fn end_suppressed(&mut self) {
        self.suppressed = self.suppressed.saturating_sub(1);
        if (self.sampling.quiet_from).is_some_and(|at| self.stack.len() <= at) {
            self.sampling.quiet_from = None;
        }
    }

    /// Opens a call; returns false when it is not to be recorded.
    #[inline]
    fn open(&mut self, id: FunctionId, c_bit: u32) -> bool {
        if id == SUPPRESSED || self.suppressed > 0 {
            self.suppress(c_bit);
            return false;
        }
        self.stack.push(id.0 | c_bit);
        true
    }

    /// Closes the innermost open call; returns its id and whether it was a
    /// C call, or None when it is not to be recorded.
    #[inline]
    fn close(&mut self, top: u32) -> Option<(FunctionId, bool)> {
        let id = FunctionId(top & !C_BIT);
        if id == SUPPRESSED {
            self.end_suppressed();
            return None;
        }
        Some((id, top & C_BIT != 0))
    }

    /// Records a return for every call still open (at stop).
    fn close_open_calls(&mut self, session: &Session, t: u64) {
        while let Some(top) = self.stack.pop() {
            if let Some((id, c)) = self.close(top) {
                let kind = if c { Kind::CReturn } else { Kind::Return };
                self.record(session, RawEvent::new(t, id, kind, 0));
            }
        }
    }

    #[cold]
    fn hand_over(&mut self, session: &Session) {
        session.recorder.hand_over(&mut self.buf);
    }
}

impl Slot {
    /// The thread is exiting: deliver what it recorded.
    fn hand_over_at_exit(&self) {
        let Ok(_exit) = self.exit_lock.lock() else {
            return;
        };
        // SAFETY: see the soundness note on `Slot`: this is case (3).
        #[allow(unsafe_code)]
        let state = unsafe { &mut *self.state.get() };
        if state.retired {
            return;
        }
        if let Some(session) = self.session.upgrade() {
            session.recorder.hand_over(&mut state.buf);
        }
        state.retired = true;
    }
}

/// The thread-local handle on a thread's slot; its destructor delivers the
/// thread's last events when the thread exits.
struct Local(UnsafeCell<Option<Arc<Slot>>>);

impl Drop for Local {
    fn drop(&mut self) {
        // Before the thread's control block can be reused by a new thread.
        last_thread::forget_current();
        if let Some(slot) = self.0.get_mut().take() {
            slot.hand_over_at_exit();
        }
    }
}

thread_local! {
    static LOCAL: Local = const { Local(UnsafeCell::new(None)) };
}

/// The active session, as a pointer from `Arc::into_raw` (or null).
static SESSION: AtomicPtr<Session> = AtomicPtr::new(ptr::null_mut());

/// Makes `session` the active one. The caller checked none was active.
pub fn activate(session: Arc<Session>) {
    let old = SESSION.swap(Arc::into_raw(session).cast_mut(), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: a non-null value always came from `Arc::into_raw`.
        #[allow(unsafe_code)]
        drop(unsafe { Arc::from_raw(old) });
    }
}

/// Deactivates and returns the active session. Call with the GIL held, so
/// that no hook is using it.
pub fn deactivate() -> Option<Arc<Session>> {
    let old = SESSION.swap(ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: a non-null value always came from `Arc::into_raw`, and the
    // GIL guarantees no hook still borrows it.
    #[allow(unsafe_code)]
    (!old.is_null()).then(|| unsafe { Arc::from_raw(old) })
}

/// Runs `f` on the active session without taking it.
pub fn with_session<R>(f: impl FnOnce(&Arc<Session>) -> R) -> Option<R> {
    let ptr = SESSION.load(Ordering::Acquire);
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the pointer came from `Arc::into_raw` and is only released
    // by `deactivate`, which, like every caller of this, holds the GIL.
    #[allow(unsafe_code)]
    let session = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(ptr) });
    Some(f(&session))
}

/// Runs `f` with the session and the calling thread's state, creating the
/// state on the thread's first event. Does nothing when not recording.
#[inline(always)]
fn with_thread(f: impl FnOnce(&Session, &mut SlotState)) {
    let ptr = SESSION.load(Ordering::Acquire);
    if ptr.is_null() {
        return;
    }
    // SAFETY: as in `with_session`: hooks hold the GIL, so the session
    // outlives this call.
    #[allow(unsafe_code)]
    let session = unsafe { &*ptr };
    let state = match last_thread::get(session.generation) {
        Some(state) => state,
        None => match thread_state(ptr) {
            Some(state) => state,
            None => return,
        },
    };
    // SAFETY: case (1) of the soundness note on `Slot`: the state belongs
    // to this thread and the active session, which keeps its slot alive,
    // and hooks are never re-entered, so this is the only borrow.
    #[allow(unsafe_code)]
    f(session, unsafe { &mut *state });
}

/// The calling thread's state for the session at `ptr`, found through
/// the thread-local (creating it on the thread's first event), and cached
/// as the last thread's (see `last_thread`). `None` for a thread not
/// recorded, or one whose thread-locals are already destroyed (exiting).
#[cold]
#[inline(never)]
fn thread_state(ptr: *mut Session) -> Option<*mut SlotState> {
    // SAFETY: the caller's pointer to the active session (GIL held).
    #[allow(unsafe_code)]
    let session = unsafe { &*ptr };
    LOCAL
        .try_with(|local| {
            // SAFETY: only this thread touches its thread-local, and hooks
            // are never re-entered, so this is the only borrow.
            #[allow(unsafe_code)]
            let cell = unsafe { &mut *local.0.get() };
            if !matches!(cell, Some(slot) if slot.generation == session.generation) {
                // SAFETY: as above; `ManuallyDrop` keeps the refcount as is.
                #[allow(unsafe_code)]
                let arc = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(ptr) });
                *cell = Some(arc.new_slot());
            }
            let slot = cell.as_ref()?;
            let state = slot.state.get();
            // SAFETY: case (1) of the soundness note on `Slot`; a read.
            #[allow(unsafe_code)]
            let live = unsafe { !(*state).ignored && !(*state).retired };
            if !live {
                return None;
            }
            last_thread::set(session.generation, state);
            Some(state)
        })
        .ok()
        .flatten()
}

/// True while a recording is active.
#[inline]
pub fn recording() -> bool {
    !SESSION.load(Ordering::Acquire).is_null()
}

/// Records a user event (see `rtrace::mark`) stamped `t` on the calling
/// thread. Returns false when nothing is recorded (no recording, or the
/// thread is not recorded), true also for a span begin that `sample` left
/// out but counts (its end must come). Call with the GIL held.
pub fn record_mark(t: u64, name: &str, kind: Kind, payload: Option<&Payload>) -> bool {
    let mut recorded = false;
    with_thread(|session, state| {
        let Some(id) = session.recorder.intern_name(name) else {
            return;
        };
        if let Some(filters) = session.filters() {
            match calls::admit_mark(filters, state, kind) {
                MarkFate::Record => calls::write_pending(session, state),
                MarkFate::Taken => {
                    recorded = true;
                    return;
                }
                MarkFate::Dropped => return,
            }
        }
        let t = t.max(session.promised.load(Ordering::Relaxed));
        session
            .recorder
            .push_mark(&mut state.buf, t, id, kind, payload);
        recorded = true;
    });
    recorded
}

/// A new flow id and its token, from the active recording.
pub fn new_flow() -> Option<(u64, String)> {
    with_session(|session| session.recorder.new_flow())
}

/// Names the calling thread; its `threading` name is no longer looked up.
pub fn name_current_thread(name: &str) {
    with_thread(|session, state| {
        state.name_tries = 0;
        if let Ok(mut named) = session.user_named.lock() {
            named.insert(state.buf.tid);
        }
        session.recorder.name_thread(state.buf.tid, name.to_owned());
    });
}

/// A Python function started or resumed.
#[inline]
pub fn on_call(code: *mut ffi::PyObject, frame: *mut ffi::PyObject) {
    if !on_cached_thread(|session, state| call_fast(session, state, code)) {
        on_call_general(code, frame);
    }
}

/// Runs `f` (a fast path) with the session and the calling thread's state
/// if the thread is the cached one (`last_thread`): true when `f` did the
/// event (or nothing is recording), false to leave it to the general path.
#[inline(always)]
fn on_cached_thread(f: impl FnOnce(&Session, &mut SlotState) -> bool) -> bool {
    let ptr = SESSION.load(Ordering::Acquire);
    if ptr.is_null() {
        return true;
    }
    // SAFETY: as in `with_session`: hooks hold the GIL, so the session
    // outlives this call.
    #[allow(unsafe_code)]
    let session = unsafe { &*ptr };
    match last_thread::get(session.generation) {
        // SAFETY: as in `with_thread`.
        #[allow(unsafe_code)]
        Some(state) => f(session, unsafe { &mut *state }),
        None => false,
    }
}

/// The common call — no filters, the thread named, its function interned,
/// the TSC, room on the stack and in the buffer — recorded by straight-line
/// code with no call in it, so that the compiler saves no registers for
/// it (a sixth of the hook's instructions before). Returns false, having
/// changed nothing, for anything else.
#[inline(always)]
fn call_fast(session: &Session, state: &mut SlotState, code: *mut ffi::PyObject) -> bool {
    if session.filters.is_some() || state.name_tries != 0 || state.suppressed != 0 {
        return false;
    }
    let Some(value) = session.extra.get_in_place(code) else {
        return false;
    };
    let id = FunctionId(value as u32);
    if value == 0 || (value >> 32) as u32 != session.generation || id == SUPPRESSED {
        return false;
    }
    state.open_fast(id, Kind::Call, 0)
}

/// Every call `call_fast` leaves: the first of a function or a thread,
/// filters, a full buffer, ...
#[inline(never)]
fn on_call_general(code: *mut ffi::PyObject, frame: *mut ffi::PyObject) {
    let t = ticks();
    let mut ask = None;
    with_thread(|session, state| {
        if session.filters.is_none() && state.name_tries == 0 {
            record_call(session, state, session.code_id(code), t);
        } else {
            ask = on_call_filtered_or_unnamed(session, state, code, t);
        }
    });
    if let Some(ask) = ask {
        answer_call(&ask, frame);
    }
}

/// Opens and records a call (no filters).
#[inline(always)]
fn record_call(session: &Session, state: &mut SlotState, id: FunctionId, t: u64) {
    if state.open(id, 0) {
        state.record(session, RawEvent::new(t, id, Kind::Call, 0));
    }
}

/// `on_call` with filters, or on a thread whose name is not known yet.
/// Out of line, so that the common case stays small.
#[inline(never)]
fn on_call_filtered_or_unnamed(
    session: &Session,
    state: &mut SlotState,
    code: *mut ffi::PyObject,
    t: u64,
) -> Option<Ask> {
    let id = session.code_id(code);
    let ask = match session.filters() {
        None => {
            record_call(session, state, id, t);
            None
        }
        Some(f) => calls::on_call(session, f, state, id, t),
    };
    if state.name_tries > 0 {
        // A new thread is named once `threading` has registered it, a few
        // calls into its bootstrap.
        let named = session.try_name_thread(state.buf.tid);
        state.name_tries = if named { 0 } else { state.name_tries - 1 };
    }
    ask
}

/// Makes the text of a call's arguments (`log_args`), with no borrow of
/// the session or the thread's state held (see `args`), and hands it to
/// the call waiting for it.
#[cold]
fn answer_call(ask: &Ask, frame: *mut ffi::PyObject) {
    // SAFETY: hooks run with the GIL held.
    #[allow(unsafe_code)]
    let py = unsafe { Python::assume_gil_acquired() };
    let text = ask.call_text(py, frame);
    with_thread(|session, state| {
        if let (true, Some(f)) = (session.generation == ask.generation, session.filters()) {
            calls::set_call_text(session, f, state, text, ticks());
        }
    });
}

/// Makes the text of a returned value (`log_args`), then records the
/// return with it (see `answer_call`).
#[cold]
fn answer_return(ask: &Ask, kind: Kind, t: u64, value: *mut ffi::PyObject) {
    // SAFETY: hooks run with the GIL held.
    #[allow(unsafe_code)]
    let py = unsafe { Python::assume_gil_acquired() };
    let text = ask.value_text(py, value);
    with_thread(|session, state| {
        if let (true, Some(f)) = (session.generation == ask.generation, session.filters()) {
            let again = calls::on_return(session, f, state, (kind, t), value, text);
            debug_assert!(again.is_none());
        }
    });
}

/// A Python function returned or yielded `value` (`Kind::Return`; NULL
/// when not known) or was left by an exception (`Kind::Exception`).
/// Returns of frames entered before recording began are ignored; C calls
/// left open are closed first.
#[inline]
pub fn on_return(kind: Kind, value: *mut ffi::PyObject) {
    if !on_cached_thread(|session, state| return_fast(session, state, kind)) {
        on_return_general(kind, value);
    }
}

/// The common return (see `call_fast`): no filters, a recorded Python call
/// on top of the stack, the TSC, room in the buffer.
#[inline(always)]
fn return_fast(session: &Session, state: &mut SlotState, kind: Kind) -> bool {
    if session.filters.is_some() {
        return false;
    }
    let Some(&top) = state.stack.last() else {
        return false;
    };
    if top & C_BIT != 0 || top == SUPPRESSED.0 {
        return false;
    }
    state.close_fast(FunctionId(top), kind)
}

/// Every return `return_fast` leaves.
#[inline(never)]
fn on_return_general(kind: Kind, value: *mut ffi::PyObject) {
    let t = ticks();
    let mut ask = None;
    with_thread(|session, state| {
        if let Some(f) = session.filters() {
            ask = on_return_filtered(session, f, state, (kind, t), value);
            return;
        }
        while let Some(top) = state.stack.pop() {
            let is_c = top & C_BIT != 0;
            if let Some((id, _)) = state.close(top) {
                let kind = if is_c { Kind::CReturn } else { kind };
                state.record(session, RawEvent::new(t, id, kind, 0));
            }
            if !is_c {
                return;
            }
        }
    });
    if let Some(ask) = ask {
        answer_return(&ask, kind, t, value);
    }
}

/// `calls::on_return`, out of line, so that `on_return` stays small.
#[inline(never)]
fn on_return_filtered(
    session: &Session,
    filters: &Filters,
    state: &mut SlotState,
    event: (Kind, u64),
    value: *mut ffi::PyObject,
) -> Option<Ask> {
    calls::on_return(session, filters, state, event, value, None)
}

/// A callable is about to be called; recorded if it is implemented in C.
#[inline]
pub fn on_c_call(callable: *mut ffi::PyObject, self_arg: *mut ffi::PyObject) {
    if !on_cached_thread(|session, state| c_call_fast(session, state, callable, self_arg)) {
        on_c_call_general(callable, self_arg);
    }
}

/// The common C call (see `call_fast`): a callable of a type known by its
/// exact type — done at once if it is not a C function — no filters, the
/// function met recently, the TSC, room on the stack and in the buffer.
#[inline(always)]
fn c_call_fast(
    session: &Session,
    state: &mut SlotState,
    callable: *mut ffi::PyObject,
    self_arg: *mut ffi::PyObject,
) -> bool {
    let Some(known) = CCallable::classify_exact(callable, self_arg, session.missing) else {
        return false;
    };
    let Some(c) = known else {
        return true;
    };
    if session.filters.is_some() || state.suppressed != 0 {
        return false;
    }
    match session.recent_c_function_id(c) {
        Some(id) if id != SUPPRESSED => state.open_fast(id, Kind::CCall, C_BIT),
        _ => false,
    }
}

/// Every C call `c_call_fast` leaves.
#[inline(never)]
fn on_c_call_general(callable: *mut ffi::PyObject, self_arg: *mut ffi::PyObject) {
    with_thread(|session, state| {
        let Some(c) = CCallable::classify(callable, self_arg, session.missing) else {
            return;
        };
        if let Some(f) = session.filters() {
            return calls::on_c_call(session, f, state, c, ticks());
        }
        if state.suppressed > 0 {
            state.open(SUPPRESSED, C_BIT);
            return;
        }
        let t = ticks();
        let id = session.c_function_id(c);
        if state.open(id, C_BIT) {
            state.record(session, RawEvent::new(t, id, Kind::CCall, 0));
        }
    });
}

/// A C callable returned or raised. Ignored unless a C call is open.
#[inline]
pub fn on_c_return() {
    if !on_cached_thread(c_return_fast) {
        on_c_return_general();
    }
}

/// The common C return (see `call_fast`): no filters, a recorded C call on
/// top of the stack (or no C call: nothing to do), the TSC, room in the
/// buffer.
#[inline(always)]
fn c_return_fast(session: &Session, state: &mut SlotState) -> bool {
    if session.filters.is_some() {
        return false;
    }
    let Some(&top) = state.stack.last() else {
        return true;
    };
    if top & C_BIT == 0 {
        return true;
    }
    let id = FunctionId(top & !C_BIT);
    if id == SUPPRESSED {
        return false;
    }
    state.close_fast(id, Kind::CReturn)
}

/// Every C return `c_return_fast` leaves.
#[inline(never)]
fn on_c_return_general() {
    let t = ticks();
    with_thread(|session, state| {
        if let Some(f) = session.filters() {
            return calls::on_c_return(session, f, state, t);
        }
        let Some(&top) = state.stack.last() else {
            return;
        };
        if top & C_BIT == 0 {
            return;
        }
        state.stack.pop();
        if let Some((id, _)) = state.close(top) {
            state.record(session, RawEvent::new(t, id, Kind::CReturn, 0));
        }
    });
}

/// A line of `code` is about to run.
#[inline]
pub fn on_line(code: *mut ffi::PyObject, line: u32) {
    let t = ticks();
    with_thread(|session, state| {
        let id = session.code_id(code);
        if let Some(f) = session.filters() {
            return calls::on_line(session, f, state, id, line, t);
        }
        if id != SUPPRESSED && state.suppressed == 0 {
            state.record(session, RawEvent::new(t, id, Kind::Line, line));
        }
    });
}
