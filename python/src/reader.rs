//! `rtrace.read(path)`: iterate the events of a stream file, or of a merged
//! timeline (rtrace's Perfetto files), as light objects with names
//! resolved from the intern records.

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use rtrace::input::Input;
use rtrace::timeline::{ProcessInfo, StreamId};
use rtrace::{FunctionId, Kind};

use crate::errors::Error;

/// One event read back from a stream.
#[pyclass(module = "rtrace._native", frozen, get_all)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds on the recording host.
    ts_ns: u64,
    pid: u32,
    /// The process it happened in: the `process` of its `processes()`
    /// entry (0 in a stream file). Unlike the pid, unique in a timeline
    /// of several hosts or containers.
    process: u32,
    tid: u64,
    /// "call", "return", "exception", "c_call", "c_return", "line", or a
    /// user event: "span_begin", "span_end", "instant", "counter",
    /// "flow_out", "flow_in".
    kind: Py<PyString>,
    /// Qualified function name ("Server.handle", "list.append").
    name: Py<PyString>,
    /// Module the function belongs to.
    module: Py<PyString>,
    /// Source file ("" for C functions).
    file: Py<PyString>,
    /// The line for "line" events, else the function's first line.
    line: u32,
    /// "flow_out"/"flow_in": the flow id (the token's parent-id), else None.
    flow_id: Option<u64>,
    /// "counter": the value, else None.
    value: Option<f64>,
    /// User events with arguments: a dict of them, else None.
    args: Option<Py<PyDict>>,
    /// `log_args`: on a "call", the reprs of its arguments ("x=1, y='a'").
    args_repr: Option<String>,
    /// `log_args`: on a "return", the repr of the returned (or yielded)
    /// value.
    return_repr: Option<String>,
}

#[pymethods]
impl Event {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Event(ts_ns={}, pid={}, tid={}, kind={:?}, name={:?}, file={:?}, line={})",
            self.ts_ns,
            self.pid,
            self.tid,
            self.kind.bind(py).to_string(),
            self.name.bind(py).to_string(),
            self.file.bind(py).to_string(),
            self.line
        )
    }
}

struct Names {
    name: Py<PyString>,
    module: Py<PyString>,
    file: Py<PyString>,
    line: u32,
}

/// A user event's arguments as a dict (None when it has none).
fn user_args(py: Python<'_>, args: &[rtrace::Arg]) -> PyResult<Option<Py<PyDict>>> {
    if args.is_empty() {
        return Ok(None);
    }
    let dict = PyDict::new(py);
    for arg in args {
        match &arg.value {
            rtrace::ArgValue::Int(v) => dict.set_item(&arg.key, v)?,
            rtrace::ArgValue::Float(v) => dict.set_item(&arg.key, v)?,
            rtrace::ArgValue::Str(v) => dict.set_item(&arg.key, v)?,
            rtrace::ArgValue::Bool(v) => dict.set_item(&arg.key, v)?,
        }
    }
    Ok(Some(dict.unbind()))
}

/// Iterates the events of a stream file or a merged timeline. After
/// iteration, `truncated` is True when the input ended early (a stream
/// without its end marker, a cut timeline file).
#[pyclass(module = "rtrace._native", unsendable)]
pub struct Reader {
    inner: Input,
    names: HashMap<(u32, u32), Names>,
    kinds: HashMap<&'static str, Py<PyString>>,
    pids: HashMap<u32, u32>,
}

#[pymethods]
impl Reader {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.allow_threads(|| Input::open(&path)).map_err(Error)?;
        Ok(Reader {
            inner,
            names: HashMap::new(),
            kinds: HashMap::new(),
            pids: HashMap::new(),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Event>> {
        let Some((stream, ev)) = self.inner.next_event().map_err(Error)? else {
            return Ok(None);
        };
        let kind = self.kind(py, ev.kind);
        let inner = &self.inner;
        let pid = *self
            .pids
            .entry(stream.0)
            .or_insert_with(|| inner.process(stream).map_or(0, |p| p.pid));
        let names = self.names(py, stream, ev.function);
        let (flow_id, value, args) = match &ev.mark {
            Some(mark) => (
                matches!(ev.kind, Kind::FlowOut | Kind::FlowIn).then_some(mark.flow_id),
                (ev.kind == Kind::Counter).then_some(mark.value),
                user_args(py, &mark.args)?,
            ),
            None => (None, None, None),
        };
        let text = ev.text.as_deref().map(str::to_owned);
        let (args_repr, return_repr) = match ev.kind {
            Kind::Call => (text, None),
            Kind::Return => (None, text),
            _ => (None, None),
        };
        Ok(Some(Event {
            flow_id,
            value,
            args,
            ts_ns: ev.ts_ns,
            pid,
            process: stream.0,
            tid: ev.tid,
            kind,
            name: names.name.clone_ref(py),
            module: names.module.clone_ref(py),
            file: names.file.clone_ref(py),
            line: if ev.kind == Kind::Line {
                ev.line
            } else {
                names.line
            },
            args_repr,
            return_repr,
        }))
    }

    /// True when the input ended early (known once iterated to the end).
    #[getter]
    fn truncated(&self) -> bool {
        self.inner.truncated()
    }

    /// True for a merged timeline, False for one process's stream file.
    #[getter]
    fn merged(&self) -> bool {
        self.inner.merged()
    }

    /// Session name (of the stream; of the first process of a timeline).
    #[getter]
    fn session(&self) -> String {
        self.first_process().session
    }

    #[getter]
    fn pid(&self) -> u32 {
        self.first_process().pid
    }

    #[getter]
    fn ppid(&self) -> u32 {
        self.first_process().ppid
    }

    #[getter]
    fn host(&self) -> String {
        self.first_process().host
    }

    #[getter]
    fn argv(&self) -> Vec<String> {
        self.first_process().argv
    }

    /// Describes the recorder that wrote the stream (runtime and hook).
    #[getter]
    fn recorder(&self) -> String {
        self.first_process().recorder
    }

    /// Events reported lost (of every process, for a timeline) so far.
    #[getter]
    fn lost(&self) -> u64 {
        self.inner.lost()
    }

    /// The processes seen so far: dicts with process (the number its
    /// events carry), session, pid, ppid, host, pid_namespace (its inode;
    /// 0 if unknown), argv, relayed_by, and truncated (True: its stream
    /// was cut short; False: it ended whole; None: its end is not in what
    /// was read, yet).
    fn processes<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .process_ends()
            .into_iter()
            .map(|(stream, p, truncated)| {
                let d = PyDict::new(py);
                d.set_item("process", stream.0)?;
                d.set_item("session", p.session)?;
                d.set_item("pid", p.pid)?;
                d.set_item("ppid", p.ppid)?;
                d.set_item("host", p.host)?;
                d.set_item("pid_namespace", p.pid_namespace)?;
                d.set_item("argv", p.argv)?;
                d.set_item("relayed_by", p.relayed_by)?;
                d.set_item("truncated", truncated)?;
                Ok(d)
            })
            .collect()
    }

    /// Thread names seen so far, by OS thread id.
    fn thread_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        match &self.inner {
            Input::Stream(r) => {
                for (tid, name) in r.thread_names() {
                    dict.set_item(tid, name)?;
                }
            }
            Input::Merged(r) => {
                for (id, _) in r.streams() {
                    for (tid, name) in r.thread_names(id) {
                        dict.set_item(tid, name)?;
                    }
                }
            }
        }
        Ok(dict)
    }
}

impl Reader {
    fn kind(&mut self, py: Python<'_>, kind: Kind) -> Py<PyString> {
        self.kinds
            .entry(kind.as_str())
            .or_insert_with(|| PyString::intern(py, kind.as_str()).unbind())
            .clone_ref(py)
    }

    fn first_process(&self) -> ProcessInfo {
        self.inner
            .processes()
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    fn names(&mut self, py: Python<'_>, stream: StreamId, id: FunctionId) -> &Names {
        let key = (stream.0, id.0);
        if !self.names.contains_key(&key) {
            let names = match self.inner.function(stream, id) {
                Some(f) => Names {
                    name: PyString::new(py, &f.name).unbind(),
                    module: PyString::new(py, &f.module).unbind(),
                    file: PyString::new(py, &f.file).unbind(),
                    line: f.line,
                },
                None => Names {
                    name: PyString::new(py, &format!("<function #{}>", id.0)).unbind(),
                    module: PyString::new(py, "").unbind(),
                    file: PyString::new(py, "").unbind(),
                    line: 0,
                },
            };
            self.names.insert(key, names);
        }
        &self.names[&key]
    }
}
