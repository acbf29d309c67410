//! The collector inside a Python process (`rtrace run`, tests): listens,
//! merges and writes the timeline on a background thread; and the offline
//! merge of stream files.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rtrace::export::MergedReader;
use rtrace::input::Input;
use rtrace::merge::{MergeConfig, StreamStats};
use rtrace::Address;
use rtrace_collect::access::{self, Access};
use rtrace_collect::live::{self, Collected, LiveOptions};
use rtrace_collect::status::{regular_file_size, Progress, ProgressLine};
use rtrace_collect::stop::Stop;
use rtrace_collect::{offline, output};

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && (0.0..=3600.0).contains(&value)) {
        return Err(PyValueError::new_err(format!(
            "{name} must be between 0 and 3600 seconds, not {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

fn merge_config(window: f64) -> PyResult<MergeConfig> {
    Ok(MergeConfig {
        window: seconds("window", window)?,
        ..MergeConfig::default()
    })
}

/// One row per stream: what the collector saw of it.
fn stats_dicts<'py>(
    py: Python<'py>,
    stats: &[StreamStats],
    bytes: &[u64],
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = PyDict::new(py);
            d.set_item("session", &s.process.session)?;
            d.set_item("pid", s.process.pid)?;
            d.set_item("ppid", s.process.ppid)?;
            d.set_item("host", &s.process.host)?;
            d.set_item("pid_namespace", s.process.own_pid_namespace())?;
            d.set_item("events", s.events)?;
            d.set_item("lost", s.end.map_or(0, |e| e.lost))?;
            d.set_item("late", s.late)?;
            d.set_item("bytes", bytes.get(i).copied().unwrap_or(0))?;
            d.set_item("truncated", s.end.is_none_or(|e| e.truncated))?;
            d.set_item("error", s.error.clone())?;
            d.set_item("clock", s.clock.map(|c| c.status.as_str()))?;
            d.set_item("clock_offset_ns", s.clock.map(|c| c.offset_ns))?;
            d.set_item("clock_uncertainty_ns", s.clock.map(|c| c.uncertainty_ns))?;
            d.set_item("clock_drift_ppb", s.clock.map(|c| c.drift_ppb))?;
            d.set_item("clock_samples", s.clock.map_or(0, |c| c.samples))?;
            d.set_item("clock_jumps", s.clock_jumps)?;
            d.set_item("clamped", s.clamped)?;
            Ok(d)
        })
        .collect()
}

/// A collector running on a background thread of this process.
#[pyclass(module = "rtrace._native")]
pub struct Collector {
    options: LiveOptions,
    output: PathBuf,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<anyhow::Result<Collected>>>,
    /// The addresses listened on while running (TCP port 0 resolved).
    listening: Vec<String>,
}

#[pymethods]
impl Collector {
    #[new]
    #[pyo3(signature = (listen, output, *, window = 1.0, drain = 1.0, token = None, insecure_no_auth = false, max_connections = access::DEFAULT_MAX_CONNECTIONS))]
    fn new(
        listen: Vec<String>,
        output: PathBuf,
        window: f64,
        drain: f64,
        token: Option<String>,
        insecure_no_auth: bool,
        max_connections: usize,
    ) -> PyResult<Self> {
        let listen = listen
            .iter()
            .map(|a| a.parse::<Address>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if listen.is_empty() {
            return Err(PyValueError::new_err(
                "the collector needs at least one address to listen on",
            ));
        }
        Ok(Collector {
            options: LiveOptions {
                listen,
                access: Access {
                    token: token.and_then(rtrace::Token::new),
                    insecure_no_auth,
                    max_connections,
                    ..Access::default()
                },
                merge: merge_config(window)?,
                drain: seconds("drain", drain)?,
                status: false,
                // Inside someone's program: leave its threads' priorities
                // alone (rtrace-collect raises its merge thread's).
                nice: 0,
            },
            output,
            stop: Stop::new(),
            thread: None,
            listening: Vec::new(),
        })
    }

    /// Starts listening; returns once every address accepts connections.
    fn start(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.thread.is_some() {
            return Err(PyRuntimeError::new_err("this collector is already running"));
        }
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Vec<String>>(1);
        let options = self.options.clone();
        let stop = self.stop.clone();
        let out = self.output.clone();
        let thread = std::thread::Builder::new()
            .name("rtrace-collector".into())
            .spawn(move || {
                // Created once listening: a collector that fails to start
                // leaves an existing file (another collector's) alone.
                let create = || output::create(&out);
                live::collect(&options, create, &stop, move |listening| {
                    let _ = ready_tx.send(listening.iter().map(ToString::to_string).collect());
                })
            })
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the collector thread: {e}"))
            })?;
        let ready = py.allow_threads(|| ready_rx.recv_timeout(Duration::from_secs(10)));
        let Ok(listening) = ready else {
            let reason = match py.allow_threads(|| thread.join()) {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "it did not start listening within 10 s".into(),
            };
            return Err(PyRuntimeError::new_err(format!(
                "the collector failed: {reason}"
            )));
        };
        self.listening = listening;
        self.thread = Some(thread);
        Ok(())
    }

    /// Stops accepting, drains open streams (up to `drain` seconds),
    /// finishes the file and returns per-stream stats.
    fn stop<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let Some(thread) = self.thread.take() else {
            return Err(PyRuntimeError::new_err("this collector is not running"));
        };
        self.stop.request();
        match py.allow_threads(|| thread.join()) {
            Ok(Ok(collected)) => stats_dicts(py, &collected.stats, &collected.bytes),
            Ok(Err(e)) => Err(PyRuntimeError::new_err(format!(
                "the collector failed: {e:#}"
            ))),
            Err(_) => Err(PyRuntimeError::new_err("the collector thread panicked")),
        }
    }

    /// The addresses it listens on, once started (a TCP port 0 as the
    /// port the system chose); empty before.
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.listening.clone()
    }

    /// The output file.
    #[getter]
    fn output(&self) -> PathBuf {
        self.output.clone()
    }
}

/// An offline merge's per-stream stats, and the inputs it left out (path,
/// why).
type MergeResult<'py> = (Vec<Bound<'py, PyDict>>, Vec<(PathBuf, String)>);

/// Merges stream files into one timeline (`.pftrace`, or `.json` for
/// Chrome JSON); returns per-stream stats and the inputs that could not be
/// read at all (path, why), which are left out. Raises, writing nothing,
/// when no input can be read.
#[pyfunction]
#[pyo3(signature = (inputs, output, *, window = 1.0))]
pub fn merge<'py>(
    py: Python<'py>,
    inputs: Vec<PathBuf>,
    output: PathBuf,
    window: f64,
) -> PyResult<MergeResult<'py>> {
    let config = merge_config(window)?;
    let format = output::Format::for_path(&output);
    let create = || output::create_apart_from(&output, &inputs, format);
    let result = py.allow_threads(|| offline::merge_files(&inputs, create, config, |_| {}));
    match result {
        Ok(merged) => Ok((
            stats_dicts(py, &merged.stats, &merged.bytes)?,
            merged.skipped,
        )),
        Err(e) => Err(PyRuntimeError::new_err(format!("{e:#}"))),
    }
}

/// Runs the `rtrace-collect` command line in this process (the console
/// script); returns its exit status. Tunes the process's malloc as the
/// binary does (`tune_heap_for_collecting`).
#[pyfunction]
pub fn collect_main(py: Python<'_>, argv: Vec<String>) -> u8 {
    rtrace_collect::heap::tune_for_collecting();
    py.allow_threads(|| rtrace_collect::cli::main_with_args(argv))
}

/// Tunes this process's malloc for collecting, as `rtrace-collect` does:
/// freed batch buffers are kept for reuse, in one arena. For processes
/// whose job is collecting (the `rtrace` command line before `run` and
/// `export`), not for a program that embeds a `Collector`.
#[pyfunction]
pub fn tune_heap_for_collecting() {
    rtrace_collect::heap::tune_for_collecting();
}

/// `rtrace export`: one merged timeline (an rtrace `.pftrace`) is
/// rewritten in `format` (`chrome` or `perfetto`), by default the one
/// `output`'s name asks for (`.json`: Chrome trace JSON); stream files are
/// merged, as `merge` does. Each input is opened
/// once, so a pipe works (`rtrace export <(zcat t.rtrace.gz) -o t.json`).
/// Returns the merge's stats and skipped inputs, or None for a rewrite.
/// With `progress`, work that takes more than a second shows its progress
/// on stderr if that is a terminal.
#[pyfunction]
#[pyo3(signature = (inputs, output, *, progress = false, format = None))]
pub fn export<'py>(
    py: Python<'py>,
    inputs: Vec<PathBuf>,
    output: PathBuf,
    progress: bool,
    format: Option<&str>,
) -> PyResult<Option<MergeResult<'py>>> {
    let config = merge_config(1.0)?;
    let format = match format {
        None => output::Format::for_path(&output),
        Some(name) => output::Format::named(name).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "format must be \"chrome\" or \"perfetto\", not {name:?}"
            ))
        })?,
    };
    let result = py.allow_threads(|| -> anyhow::Result<Option<offline::Merged>> {
        let mut opened = Vec::new();
        let mut skipped = Vec::new();
        for path in &inputs {
            match Input::open(path) {
                Ok(Input::Merged(mut reader)) if inputs.len() == 1 => {
                    rewrite(&mut reader, path, &output, format, progress)?;
                    return Ok(None);
                }
                Ok(Input::Merged(_)) => skipped.push((
                    path.clone(),
                    format!(
                        "{} is a merged timeline: merge stream files, or rewrite one \
                         timeline at a time",
                        path.display()
                    ),
                )),
                Ok(Input::Stream(reader)) => opened.push((*reader, regular_file_size(path))),
                Err(e) => skipped.push((path.clone(), offline::input_error(path, e))),
            }
        }
        let mut line = ProgressLine::stderr(progress, "merging");
        let create = || output::create_apart_from(&output, &inputs, format);
        offline::merge_opened(opened, skipped, create, config, |p| line.update(p)).map(Some)
    });
    match result {
        Ok(Some(merged)) => Ok(Some((
            stats_dicts(py, &merged.stats, &merged.bytes)?,
            merged.skipped,
        ))),
        Ok(None) => Ok(None),
        Err(e) => Err(PyRuntimeError::new_err(format!("{e:#}"))),
    }
}

/// Rewrites the merged timeline `reader` reads (from `input`) into
/// `output`, in `format`.
fn rewrite(
    reader: &mut MergedReader<BufReader<File>>,
    input: &Path,
    output: &Path,
    format: output::Format,
    progress: bool,
) -> anyhow::Result<()> {
    let mut sink = output::create_apart_from(output, &[input.to_owned()], format)?;
    let total = Progress::total_of([input]);
    let mut line = ProgressLine::stderr(progress, "converting");
    rtrace::export::replay_with_progress(reader, &mut sink, |read| {
        line.update(Progress { read, total })
    })?;
    Ok(())
}
