//! The `rtrace._native` extension module: the C-level hooks that record
//! Python execution into the core recorder, and the stream reader.
//!
//! Modules: `hook` (the hot path and per-thread state), `calls` (its
//! filtered path), `args` (`log_args` texts), `filter` (what a recording leaves out, `glob` its
//! patterns), `monitoring` (`sys.monitoring` callbacks, 3.12+), `legacy`
//! (profile/trace functions) with `adopt` (threads that start outside `threading`), `recording` (session start/stop/fork),
//! `reader` (`rtrace.read`), `stats` (`rtrace stats`), `marks` (user
//! events) with `quiet` (their entry points when nothing records).

use pyo3::prelude::*;

mod adopt;
mod args;
mod calls;
mod code_extra;
mod collector;
mod errors;
mod ffi;
mod filter;
mod gil;
mod glob;
mod hook;
mod last_thread;
mod legacy;
mod marks;
mod monitoring;
mod quiet;
mod reader;
mod recording;
mod stats;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PROTOCOL_VERSION", rtrace::wire::FORMAT_VERSION)?;
    m.add("RecordingError", py.get_type::<errors::RecordingError>())?;
    m.add("StreamError", py.get_type::<errors::StreamError>())?;
    m.add_class::<reader::Reader>()?;
    m.add_class::<collector::Collector>()?;
    m.add_function(wrap_pyfunction!(collector::merge, m)?)?;
    m.add_function(wrap_pyfunction!(collector::collect_main, m)?)?;
    m.add_function(wrap_pyfunction!(collector::tune_heap_for_collecting, m)?)?;
    m.add_function(wrap_pyfunction!(collector::export, m)?)?;
    m.add_function(wrap_pyfunction!(stats::profile_report, m)?)?;
    m.add_class::<reader::Event>()?;
    m.add_class::<filter::Filters>()?;
    m.add_class::<legacy::ProfileHook>()?;
    m.add_class::<legacy::TraceHook>()?;
    m.add_function(wrap_pyfunction!(recording::start, m)?)?;
    m.add_function(wrap_pyfunction!(recording::stop, m)?)?;
    m.add_function(wrap_pyfunction!(recording::stats, m)?)?;
    m.add_function(wrap_pyfunction!(recording::is_recording, m)?)?;
    m.add_function(wrap_pyfunction!(recording::set_starting_depth, m)?)?;
    m.add_function(wrap_pyfunction!(recording::before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(recording::after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(recording::hot_path_shortcuts, m)?)?;
    m.add_function(wrap_pyfunction!(recording::check_address, m)?)?;
    m.add_function(wrap_pyfunction!(monitoring::monitoring_callbacks, m)?)?;
    m.add_class::<marks::Span>()?;
    m.add_class::<marks::Traced>()?;
    m.add_function(wrap_pyfunction!(marks::span, m)?)?;
    // Quick entry points in front of the full ones (see `quiet`).
    let instant = wrap_pyfunction!(marks::instant, m)?.into_any();
    let counter = wrap_pyfunction!(marks::counter, m)?.into_any();
    quiet::add(m, instant, counter)?;
    m.add_function(wrap_pyfunction!(marks::name_thread, m)?)?;
    m.add_function(wrap_pyfunction!(marks::flow_out, m)?)?;
    m.add_function(wrap_pyfunction!(marks::flow_in, m)?)?;
    m.add_function(wrap_pyfunction!(legacy::set_legacy_all_threads, m)?)?;
    m.add_function(wrap_pyfunction!(legacy::set_legacy_current_thread, m)?)?;
    m.add_function(wrap_pyfunction!(legacy::legacy_event, m)?)?;
    Ok(())
}
