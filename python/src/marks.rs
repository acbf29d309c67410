//! User events from Python: `rtrace.span`, `instant`, `counter`,
//! `name_thread`, `flow_out` and `flow_in`. Each records into the calling
//! thread's buffer through `hook::record_mark`, so it keeps its place among
//! the thread's calls; when no recording is active each is a check and a
//! return.

use std::sync::OnceLock;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple};
use rtrace::clock::ticks;
use rtrace::mark::{token, FlowIds, Payload};
use rtrace::{ArgRef, Kind};

use crate::hook;

/// Names of flow ends when the caller gives none.
const SEND: &str = "send";
const RECEIVE: &str = "receive";

/// Flow ids for tokens made while nothing is recorded: the token still
/// lets a recording receiver find its arrow's source missing, not wrong.
fn idle_flows() -> &'static FlowIds {
    static IDS: OnceLock<FlowIds> = OnceLock::new();
    IDS.get_or_init(FlowIds::new)
}

/// Packs keyword arguments into a payload. bool, int (64-bit), float and
/// str keep their type; anything else is recorded as its `repr()`.
fn payload(flow_id: u64, value: f64, args: Option<&Bound<'_, PyDict>>) -> PyResult<Payload> {
    let mut payload = Payload::new(flow_id, value);
    let Some(args) = args else {
        return Ok(payload);
    };
    for (key, value) in args.iter() {
        let key = key.downcast::<PyString>()?.to_cow()?;
        let added = if value.is_instance_of::<PyBool>() {
            payload.arg(&key, ArgRef::Bool(value.extract()?))
        } else if value.is_instance_of::<PyInt>() {
            match value.extract::<i64>() {
                Ok(v) => payload.arg(&key, ArgRef::Int(v)),
                Err(_) => payload.arg(&key, ArgRef::Str(&value.str()?.to_cow()?)),
            }
        } else if value.is_instance_of::<PyFloat>() {
            payload.arg(&key, ArgRef::Float(value.extract()?))
        } else if let Ok(s) = value.downcast::<PyString>() {
            payload.arg(&key, ArgRef::Str(&s.to_cow()?))
        } else {
            payload.arg(&key, ArgRef::Str(&value.repr()?.to_cow()?))
        };
        if !added {
            break; // the payload is full; later arguments are dropped
        }
    }
    Ok(payload)
}

/// instant(name, /, **args)
/// --
///
/// Records a moment on the calling thread, with small typed arguments
/// shown in the viewer's details pane (bool, int, float and str keep their
/// type; other values are recorded as their repr()). Arguments take at
/// most about 1 KB; longer strings are cut.
#[pyfunction]
#[pyo3(signature = (name, /, **args))]
pub fn instant(name: &Bound<'_, PyAny>, args: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    let t = ticks();
    let name = mark_name("instant", name)?;
    if !hook::recording() {
        return Ok(());
    }
    let payload = payload(0, 0.0, args)?;
    hook::record_mark(t, &name, Kind::Instant, Some(&payload));
    Ok(())
}

/// A mark's name, or a TypeError saying what `function` takes.
fn mark_name<'a>(
    function: &str,
    name: &'a Bound<'_, PyAny>,
) -> PyResult<std::borrow::Cow<'a, str>> {
    match name.downcast::<PyString>() {
        Ok(s) => s.to_cow(),
        Err(_) => Err(PyTypeError::new_err(format!(
            "rtrace.{function} takes a name (a str) first, not {}",
            type_name(name)
        ))),
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or("?".into(), |n| n.to_string())
}

/// counter(name, value, /)
/// --
///
/// Records a counter's new value (an int or float); the viewer draws each
/// counter of a process as a track of its own.
#[pyfunction]
#[pyo3(signature = (name, value, /))]
pub fn counter(name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let t = ticks();
    let name = mark_name("counter", name)?;
    // Checked whether or not anything records: a program must not fail
    // only when it is recorded.
    let value: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "counter {name:?}: value must be an int or float, not {}",
            type_name(value)
        ))
    })?;
    if !hook::recording() {
        return Ok(());
    }
    hook::record_mark(t, &name, Kind::Counter, Some(&Payload::new(0, value)));
    Ok(())
}

/// name_thread(name, /)
/// --
///
/// Names the calling thread in the timeline (instead of the name from
/// `threading`).
#[pyfunction]
#[pyo3(signature = (name, /))]
pub fn name_thread(name: &str) {
    hook::name_current_thread(name);
}

/// flow_out(name=None)
/// --
///
/// Marks the sending of a message and returns its flow token: a W3C
/// `traceparent` string (`00-<trace id>-<flow id>-01`) to put into the
/// message — a header, a queue payload, an environment variable. The
/// receiver passes it to `flow_in()`; the timeline then draws an arrow
/// from this moment to that one. Records an instant named `name`
/// (default "send") on the calling thread, inside the current call. When
/// nothing is recorded, it still returns a valid token.
#[pyfunction]
#[pyo3(signature = (name=None, **args))]
pub fn flow_out(name: Option<&str>, args: Option<&Bound<'_, PyDict>>) -> PyResult<String> {
    let t = ticks();
    if let Some(made) = hook::new_flow() {
        let (flow_id, token) = made;
        let payload = payload(flow_id, 0.0, args)?;
        hook::record_mark(t, name.unwrap_or(SEND), Kind::FlowOut, Some(&payload));
        return Ok(token);
    }
    let ids = idle_flows();
    Ok(token::format(ids.trace_id(), ids.next()))
}

/// flow_in(token, name=None)
/// --
///
/// Marks the receipt of a message that carried `token` (from `flow_out()`
/// in this or another process, or any W3C `traceparent` value): records
/// an instant named `name` (default "receive") where the arrow ends.
/// Raises ValueError if `token` is not a traceparent.
#[pyfunction]
#[pyo3(signature = (token, name=None, **args))]
pub fn flow_in(
    token: &Bound<'_, PyAny>,
    name: Option<&str>,
    args: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let t = ticks();
    let text: std::borrow::Cow<'_, str> = if let Ok(s) = token.downcast::<PyString>() {
        s.to_cow()?
    } else if let Ok(b) = token.extract::<Vec<u8>>() {
        String::from_utf8_lossy(&b).into_owned().into()
    } else {
        return Err(PyTypeError::new_err(
            "flow_in() takes the token string returned by flow_out()",
        ));
    };
    let (_, flow_id) = token::parse(&text).map_err(PyValueError::new_err)?;
    if !hook::recording() {
        return Ok(());
    }
    let payload = payload(flow_id, 0.0, args)?;
    hook::record_mark(t, name.unwrap_or(RECEIVE), Kind::FlowIn, Some(&payload));
    Ok(())
}

/// A span: a named slice on the calling thread, from `__enter__` to
/// `__exit__`, or around each call of a function it decorates.
#[pyclass(module = "rtrace._native")]
pub struct Span {
    name: String,
    args: Option<Py<PyDict>>,
    /// For each open `with`: whether its begin was recorded (an end is
    /// recorded only then, so a recording started inside stays balanced).
    open: Vec<bool>,
}

impl Span {
    fn begin(&self, py: Python<'_>, t: u64) -> PyResult<bool> {
        if !hook::recording() {
            return Ok(false);
        }
        let args = self.args.as_ref().map(|a| a.bind(py));
        let payload = payload(0, 0.0, args)?;
        Ok(hook::record_mark(
            t,
            &self.name,
            Kind::SpanBegin,
            Some(&payload),
        ))
    }

    fn end(&self) {
        hook::record_mark(ticks(), &self.name, Kind::SpanEnd, None);
    }
}

#[pymethods]
impl Span {
    fn __enter__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
        let t = ticks();
        let began = slf.begin(slf.py(), t)?;
        slf.open.push(began);
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, PyTuple>) -> bool {
        if self.open.pop() == Some(true) {
            self.end();
        }
        false
    }

    /// Decorates a function: each call runs inside the span.
    fn __call__(&self, py: Python<'_>, func: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if !func.is_callable() {
            return Err(PyTypeError::new_err(
                "rtrace.span(...) decorates a callable; use `with rtrace.span(...):` for a block",
            ));
        }
        let wrapped = Traced {
            name: self.name.clone(),
            args: self.args.as_ref().map(|a| a.clone_ref(py)),
            func: func.clone().unbind(),
        };
        let wrapped = Bound::new(py, wrapped)?.into_any();
        let functools = py.import("functools")?;
        functools.call_method1("update_wrapper", (&wrapped, &func))?;
        Ok(wrapped.unbind())
    }

    fn __repr__(&self) -> String {
        format!("rtrace.span({:?})", self.name)
    }
}

/// span(name, /, **args)
/// --
///
/// A span named `name` with small typed arguments (as for `instant`):
/// `with rtrace.span("handle", user=uid): ...`, or as a decorator,
/// `@rtrace.span("handle")`, or `@rtrace.span` (named after the function's
/// qualified name). Spans nest with the calls around them.
#[pyfunction]
#[pyo3(signature = (name, /, **args))]
pub fn span(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    args: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let args = args.filter(|a| !a.is_empty());
    if let Ok(name) = name.downcast::<PyString>() {
        let span = Span {
            name: name.to_str()?.to_owned(),
            args: args.map(|a| a.clone().unbind()),
            open: Vec::new(),
        };
        return Ok(Bound::new(py, span)?.into_any().unbind());
    }
    if name.is_callable() && args.is_none() {
        // `@rtrace.span` without a name: the function names it.
        let qualname = name
            .getattr("__qualname__")
            .or_else(|_| name.getattr("__name__"))
            .and_then(|n| n.extract::<String>())
            .unwrap_or_else(|_| "span".to_owned());
        let span = Span {
            name: qualname,
            args: None,
            open: Vec::new(),
        };
        return span.__call__(py, name.clone());
    }
    Err(PyTypeError::new_err(format!(
        "rtrace.span takes a name (a str), not {}: `with rtrace.span(\"handle\"):`, \
         `@rtrace.span(\"handle\")`, or `@rtrace.span` to name it after the function",
        type_name(name)
    )))
}

/// A function decorated with `rtrace.span`.
#[pyclass(module = "rtrace._native", dict)]
pub struct Traced {
    name: String,
    args: Option<Py<PyDict>>,
    func: Py<PyAny>,
}

#[pymethods]
impl Traced {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let t = ticks();
        let span = Span {
            name: self.name.clone(),
            args: self.args.as_ref().map(|a| a.clone_ref(py)),
            open: Vec::new(),
        };
        let began = span.begin(py, t)?;
        let result = self.func.bind(py).call(args, kwargs);
        if began {
            span.end();
        }
        Ok(result?.unbind())
    }

    /// Binds like a function, so decorated methods get `self`.
    fn __get__(
        slf: Bound<'_, Self>,
        obj: Option<Bound<'_, PyAny>>,
        _owner: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        match obj {
            Some(obj) if !obj.is_none() => {
                let method = py.import("types")?.getattr("MethodType")?;
                Ok(method.call1((slf, obj))?.unbind())
            }
            _ => Ok(slf.into_any().unbind()),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let inner = self
            .func
            .bind(py)
            .repr()
            .map_or_else(|_| "?".to_owned(), |r| r.to_string());
        format!("<rtrace.span({:?}) of {inner}>", self.name)
    }
}
