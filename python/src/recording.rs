//! Starting and stopping a recording, and keeping it safe across `fork()`.
//! The Python package decides which hook to install; this module owns the
//! session the hooks write into.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rtrace::{Config, OnFull, Recorder};

use crate::code_extra::CodeExtra;
use crate::errors::{Error, RecordingError};
use crate::filter::Filters;
use crate::hook::{self, Session};

static GENERATION: AtomicU32 = AtomicU32::new(0);
static CODE_EXTRA: OnceLock<CodeExtra> = OnceLock::new();

/// How long `fork()` waits for the writer to park before going ahead.
const PARK_TIMEOUT: Duration = Duration::from_secs(2);

fn code_extra(py: Python<'_>) -> PyResult<CodeExtra> {
    if let Some(&extra) = CODE_EXTRA.get() {
        return Ok(extra);
    }
    let extra = CodeExtra::reserve(py).ok_or_else(|| {
        RecordingError::new_err("the interpreter has no code-object extra slot left for rtrace")
    })?;
    Ok(*CODE_EXTRA.get_or_init(|| extra))
}

/// Which shortcuts of the hot path this interpreter allows, by name:
/// code objects' extra slot read in place (`code_extra`), the recording
/// thread recognised by its thread pointer (`last_thread`), and on 3.11 a
/// frame's code read in place (`legacy::frame_code`). The tests check them
/// on the supported CPythons.
#[pyfunction]
pub fn hot_path_shortcuts(py: Python<'_>) -> PyResult<Vec<(&'static str, bool)>> {
    #[allow(unused_mut)]
    let mut shortcuts = vec![
        ("code_extra_in_place", code_extra(py)?.in_place()),
        ("thread_pointer", crate::last_thread::supported()),
    ];
    #[cfg(not(Py_3_12))]
    shortcuts.push(("frame_code_in_place", crate::legacy::frame_code::check(py)));
    Ok(shortcuts)
}

/// Checks a collector address (`unix:///path.sock`, `tcp://host:port`);
/// raises ValueError saying what is wrong with it.
#[pyfunction]
pub fn check_address(address: &str) -> PyResult<()> {
    address
        .parse::<rtrace::Address>()
        .map(|_| ())
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// Starts a session; the caller installs the hook afterwards.
#[pyfunction]
#[pyo3(signature = (*, session, output, collector, token, on_full, buffer_events, flush_interval, argv, recorder, only_current_thread, missing, thread_names, internal_files, parent_pid=None, filters=None))]
#[allow(clippy::too_many_arguments)]
pub fn start(
    py: Python<'_>,
    session: String,
    output: std::path::PathBuf,
    collector: Option<String>,
    token: Option<String>,
    on_full: &str,
    buffer_events: usize,
    flush_interval: f64,
    argv: Vec<String>,
    recorder: String,
    only_current_thread: bool,
    missing: Bound<'_, PyAny>,
    thread_names: Vec<(u64, String)>,
    internal_files: Vec<String>,
    parent_pid: Option<u32>,
    filters: Option<Py<Filters>>,
) -> PyResult<()> {
    if hook::with_session(|_| ()).is_some() {
        return Err(RecordingError::new_err(
            "rtrace is already recording in this process; stop it first (rtrace.stop())",
        ));
    }
    if !(flush_interval.is_finite() && flush_interval > 0.0) {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "flush_interval must be a positive number of seconds, not {flush_interval}"
        )));
    }
    let mut config = Config::new(session, output);
    config.collector = collector
        .map(|c| c.parse::<rtrace::Address>())
        .transpose()
        .map_err(Error)?;
    config.token = token.and_then(rtrace::Token::new);
    config.on_full = on_full.parse::<OnFull>().map_err(Error)?;
    config.buffer_events = buffer_events;
    config.flush_interval = Duration::from_secs_f64(flush_interval);
    config.argv = argv;
    config.recorder = recorder;
    config.parent_pid = parent_pid;
    config.flush_on_sigterm = true;
    let extra = code_extra(py)?;
    let started = py
        .allow_threads(|| Recorder::start(config))
        .map_err(Error)?;
    for (tid, name) in thread_names {
        started.name_thread(tid, name);
    }
    let threading = py.import("threading")?;
    let active = threading.getattr("_active")?.downcast_into::<PyDict>().ok();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    let only_tid = only_current_thread.then(hook::current_tid);
    // `missing` is `sys.monitoring.MISSING` (immortal for the process) or
    // None; only its address is used.
    let session = Session::new(
        started,
        generation,
        extra,
        only_tid,
        missing.as_ptr(),
        active.map(Bound::unbind),
        internal_files,
    )
    .with_filters(filters);
    let session = Arc::new(session);
    // Also with "block": a thread waiting for room holds the GIL the tick
    // waits for, but the tick waits on a thread of its own, and the writer
    // goes on making that room (see `ticker`).
    // The tick also gives the legacy hook to threads that started running
    // Python outside `threading` since the last one (see `adopt`).
    let weak = Arc::downgrade(&session);
    session.recorder.set_tick(Arc::new(move || {
        let session = weak.upgrade()?;
        Python::with_gil(|py| {
            crate::adopt::adopt_new_threads(py);
            session.sweep_idle()
        })
    }));
    hook::activate(session);
    Ok(())
}

/// Stats of the active session: (events, lost, bytes, error).
#[pyfunction]
pub fn stats() -> Option<(u64, u64, u64, Option<String>)> {
    hook::with_session(|s| {
        let st = s.recorder.stats();
        (st.events, st.lost, st.bytes, st.error)
    })
}

/// Ends the active session: delivers every thread's events, names the
/// threads, writes the end marker. The hook must already be removed.
/// Returns the final (events, lost, bytes, error), or None if not recording.
#[pyfunction]
pub fn stop(
    py: Python<'_>,
    thread_names: Vec<(u64, String)>,
) -> Option<(u64, u64, u64, Option<String>)> {
    let session = hook::deactivate()?;
    session.sweep(true);
    let user_named = session
        .user_named
        .lock()
        .map(|n| n.clone())
        .unwrap_or_default();
    for (tid, name) in thread_names {
        if !user_named.contains(&tid) {
            session.recorder.name_thread(tid, name);
        }
    }
    let st = py.allow_threads(|| session.recorder.finish());
    Some((st.events, st.lost, st.bytes, st.error))
}

/// Before `fork()`: deliver everything and stop the writer thread, so the
/// child inherits no half-written state and 3.12+ sees a single thread.
#[pyfunction]
pub fn before_fork(py: Python<'_>) {
    // An owned handle: another thread may stop the recording while the
    // GIL is released below.
    let Some(session) = hook::with_session(Arc::clone) else {
        return;
    };
    session.sweep(false);
    // Without the GIL: the writer's tick may be waiting for it.
    py.allow_threads(|| session.recorder.park(PARK_TIMEOUT));
}

/// After `fork()`, in the child: drop the parent's recording without
/// writing to its stream (the hook must already be removed).
#[pyfunction]
pub fn after_fork_in_child() {
    if let Some(session) = hook::deactivate() {
        // The writer thread does not exist here, and locks it held may be
        // held forever: touch nothing, free nothing.
        std::mem::forget(session);
    }
}

/// True while a session is active.
#[pyfunction]
pub fn is_recording() -> bool {
    hook::with_session(|_| ()).is_some()
}

/// Declares the number of rtrace frames on the calling thread's stack at
/// the moment the hook goes live (see `Session::set_starting_depth`).
#[pyfunction]
pub fn set_starting_depth(depth: u32) {
    hook::with_session(|s| s.set_starting_depth(depth));
}
