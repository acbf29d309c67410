//! `rtrace stats`: calls and time per process and function, computed by
//! the collector's `profile` (the code behind `rtrace-collect stats
//! --functions`) with the GIL released.

use std::path::PathBuf;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rtrace_collect::profile::{self, SortBy};
use rtrace_collect::status::ProgressLine;

use crate::errors::Error;

fn to_py(error: anyhow::Error) -> PyErr {
    match error.downcast::<rtrace::Error>() {
        Ok(e) => Error(e).into(),
        Err(other) => PyRuntimeError::new_err(format!("{other:#}")),
    }
}

/// The report on `paths` (stream files and merged timelines): aligned
/// tables, or JSON lines with `json`; the `top` first functions of each
/// process (0: all) by `sort` ("self", "total", "calls" or "mean"). With
/// `progress`, reading that takes more than a second shows its progress
/// on stderr if that is a terminal.
#[pyfunction]
#[pyo3(signature = (paths, *, top = 20, sort = "self", json = false, progress = false))]
pub fn profile_report(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    top: usize,
    sort: &str,
    json: bool,
    progress: bool,
) -> PyResult<String> {
    let sort: SortBy = sort.parse().map_err(PyValueError::new_err)?;
    let profiles = py
        .allow_threads(|| {
            let mut line = ProgressLine::stderr(progress, "reading");
            profile::profile_files_with_progress(&paths, |p| line.update(p))
        })
        .map_err(to_py)?;
    Ok(if json {
        profile::profile_json(&profiles, sort, top)
    } else {
        profile::profile_table(&profiles, sort, top)
    })
}
