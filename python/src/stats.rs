//! `rtrace stats`: calls and time per process and function, computed by
//! the collector's `profile` (the code behind `rtrace-collect stats
//! --functions`) with the GIL released.

use std::path::PathBuf;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rtrace_collect::profile::{self, SortBy};

use crate::errors::Error;

fn to_py(error: anyhow::Error) -> PyErr {
    match error.downcast::<rtrace::Error>() {
        Ok(e) => Error(e).into(),
        Err(other) => PyRuntimeError::new_err(format!("{other:#}")),
    }
}

/// The report on `paths` (stream files and merged timelines): aligned
/// tables, or JSON lines with `json`; the `top` first functions of each
/// process (0: all) by `sort` ("self", "total", "calls" or "mean").
#[pyfunction]
#[pyo3(signature = (paths, *, top = 20, sort = "self", json = false))]
pub fn profile_report(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    top: usize,
    sort: &str,
    json: bool,
) -> PyResult<String> {
    let sort: SortBy = sort.parse().map_err(PyValueError::new_err)?;
    let profiles = py
        .allow_threads(|| profile::profile_files(&paths))
        .map_err(to_py)?;
    Ok(if json {
        profile::profile_json(&profiles, sort, top)
    } else {
        profile::profile_table(&profiles, sort, top)
    })
}
