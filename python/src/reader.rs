//! `rtrace.read(path)`: iterate the events of a stream file as light
//! objects, with names resolved from the stream's intern records.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use rtrace::{EventReader, FunctionId, Kind};

use crate::errors::Error;

/// One event read back from a stream.
#[pyclass(module = "rtrace._native", frozen, get_all)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds on the recording host.
    ts_ns: u64,
    pid: u32,
    tid: u64,
    /// "call", "return", "exception", "c_call", "c_return" or "line".
    kind: Py<PyString>,
    /// Qualified function name ("Server.handle", "list.append").
    name: Py<PyString>,
    /// Module the function belongs to.
    module: Py<PyString>,
    /// Source file ("" for C functions).
    file: Py<PyString>,
    /// The line for "line" events, else the function's first line.
    line: u32,
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

/// Iterates the events of a stream file. After iteration, `truncated` is
/// True when the stream ended without its end marker.
#[pyclass(module = "rtrace._native", unsendable)]
pub struct Reader {
    inner: EventReader<BufReader<File>>,
    names: HashMap<u32, Names>,
    kinds: HashMap<&'static str, Py<PyString>>,
    pid: u32,
}

#[pymethods]
impl Reader {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py
            .allow_threads(|| EventReader::open(&path))
            .map_err(Error)?;
        let pid = inner.hello().map_or(0, |h| h.pid);
        Ok(Reader {
            inner,
            names: HashMap::new(),
            kinds: HashMap::new(),
            pid,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Event>> {
        let Some(ev) = self.inner.next_event().map_err(Error)? else {
            return Ok(None);
        };
        let kind = self.kind(py, ev.kind);
        let pid = self.pid;
        let names = self.names(py, ev.function);
        Ok(Some(Event {
            ts_ns: ev.ts_ns,
            pid,
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
        }))
    }

    /// True when the stream ended without its end marker (known once the
    /// events have been iterated to the end).
    #[getter]
    fn truncated(&self) -> bool {
        self.inner.truncated()
    }

    /// Session name from the stream's hello.
    #[getter]
    fn session(&self) -> String {
        self.inner
            .hello()
            .map(|h| h.session.clone())
            .unwrap_or_default()
    }

    #[getter]
    fn pid(&self) -> u32 {
        self.pid
    }

    #[getter]
    fn ppid(&self) -> u32 {
        self.inner.hello().map_or(0, |h| h.ppid)
    }

    #[getter]
    fn host(&self) -> String {
        self.inner
            .hello()
            .map(|h| h.host.clone())
            .unwrap_or_default()
    }

    #[getter]
    fn argv(&self) -> Vec<String> {
        self.inner
            .hello()
            .map(|h| h.argv.clone())
            .unwrap_or_default()
    }

    /// Describes the recorder that wrote the stream (runtime and hook).
    #[getter]
    fn recorder(&self) -> String {
        self.inner
            .hello()
            .map(|h| h.recorder.clone())
            .unwrap_or_default()
    }

    /// Events reported lost so far.
    #[getter]
    fn lost(&self) -> u64 {
        self.inner.lost()
    }

    /// Thread names seen so far, by OS thread id.
    fn thread_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (tid, name) in self.inner.thread_names() {
            dict.set_item(tid, name)?;
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

    fn names(&mut self, py: Python<'_>, id: FunctionId) -> &Names {
        if !self.names.contains_key(&id.0) {
            let names = match self.inner.function(id) {
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
            self.names.insert(id.0, names);
        }
        &self.names[&id.0]
    }
}
