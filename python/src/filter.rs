//! Filters: what a recording leaves out, decided in the hook before
//! anything reaches the queue.
//!
//! Per function, once, when the hook first sees it (and kept in the code
//! object's id slot, so later calls pay nothing more): `include` and
//! `exclude` patterns, `exclude_stdlib`, and whether `log_args` applies.
//! An excluded function gets the id `EXCLUDED` and is never interned.
//!
//! Per call (`calls`): `max_depth`, `sample` and `min_duration`. A
//! recording without filters never reaches either: the hook takes its
//! plain path.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use rtrace::FunctionId;

use crate::glob::Pattern;

/// Stands for an excluded function: not recorded, but what it calls is
/// (nested under the nearest recorded caller).
pub const EXCLUDED: FunctionId = FunctionId(rtrace::event::MAX_FUNCTION_ID - 1);

/// Set on an id (in the code object's slot and on the hook's call stack)
/// when the function's arguments and return value are logged.
pub const ARGS_BIT: u32 = 1 << 30;

/// What the filters say about a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Exclude,
    Record { args: bool },
}

/// A pattern and what it is matched against.
#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    /// Contains `/` or ends in `.py`: matched against the source file
    /// (its full path with a `/`, else its base name).
    file: bool,
}

impl Rule {
    fn new(text: &str) -> Rule {
        Rule {
            pattern: Pattern::new(text),
            file: text.contains('/') || text.ends_with(".py"),
        }
    }

    fn hit(&self, f: &Function<'_>) -> bool {
        if self.file {
            let target = if self.pattern.as_str().contains('/') {
                f.file
            } else {
                f.file.rsplit('/').next().unwrap_or(f.file)
            };
            return !f.file.is_empty() && self.pattern.matches(target);
        }
        self.pattern.matches(f.module) || self.pattern.matches(f.name) || {
            let full = format!("{}.{}", f.module, f.name);
            self.pattern.matches(&full)
        }
    }
}

/// A function as the filters see it.
pub struct Function<'a> {
    pub module: &'a str,
    /// Qualified name (`Server.handle`, `list.append`).
    pub name: &'a str,
    /// Source file; "" for C functions.
    pub file: &'a str,
}

/// The standard library and installed packages (`exclude_stdlib`).
#[derive(Debug)]
struct Libraries {
    /// Directory prefixes, each ending in `/`.
    paths: Vec<String>,
    /// `sys.stdlib_module_names`.
    modules: HashSet<String>,
}

impl Libraries {
    fn contains_file(&self, file: &str) -> bool {
        file.starts_with("<frozen ") || self.paths.iter().any(|p| file.starts_with(p.as_str()))
    }

    /// A C function's module is library code when it is a standard module
    /// or was loaded from a library directory.
    fn contains_module(&self, py: Python<'_>, module: &str) -> bool {
        let top = module.split('.').next().unwrap_or(module);
        top.is_empty()
            || self.modules.contains(top)
            || module_file(py, top).is_some_and(|file| self.contains_file(&file))
    }
}

/// `sys.modules[name].__file__`, read from the module's dict (no Python
/// code runs: the hook may not let the GIL go here).
fn module_file(py: Python<'_>, name: &str) -> Option<String> {
    // SAFETY: GIL held; returns a borrowed reference to `sys.modules`.
    #[allow(unsafe_code)]
    let modules = unsafe { ffi::PyImport_GetModuleDict() };
    if modules.is_null() {
        return None;
    }
    // SAFETY: non-null borrowed reference to a live object.
    #[allow(unsafe_code)]
    let modules = unsafe { Bound::from_borrowed_ptr(py, modules) };
    let module = modules.downcast::<PyDict>().ok()?.get_item(name).ok()??;
    let file = module
        .downcast::<PyModule>()
        .ok()?
        .dict()
        .get_item("__file__")
        .ok()??;
    file.extract().ok()
}

/// The per-function rules.
#[derive(Debug)]
struct Rules {
    include: Vec<Rule>,
    exclude: Vec<Rule>,
    libraries: Option<Libraries>,
    /// `None`: off; empty: every recorded function.
    log_args: Option<Vec<Rule>>,
}

impl Rules {
    fn decide(&self, f: &Function<'_>, library: impl Fn(&Libraries) -> bool) -> Decision {
        let any = |rules: &[Rule]| rules.iter().any(|r| r.hit(f));
        let excluded = any(&self.exclude)
            || if self.include.is_empty() {
                self.libraries.as_ref().is_some_and(library)
            } else {
                !any(&self.include)
            };
        if excluded {
            return Decision::Exclude;
        }
        let args = self
            .log_args
            .as_ref()
            .is_some_and(|rules| rules.is_empty() || any(rules));
        Decision::Record { args }
    }
}

/// Keeps the first of every `every` top-level calls.
#[derive(Debug)]
pub struct Sampler {
    pub every: u64,
    seen: AtomicU64,
}

impl Sampler {
    fn new(every: u64) -> Sampler {
        Sampler {
            every,
            seen: AtomicU64::new(0),
        }
    }

    /// Whether the next top-level call is to be recorded.
    pub fn keep(&self) -> bool {
        self.every <= 1 || self.seen.fetch_add(1, Ordering::Relaxed) % self.every == 0
    }
}

/// A recording's filters (`rtrace.record(include=..., ...)`); built and
/// checked when the recording is created, used by the hook.
#[pyclass(module = "rtrace._native", frozen)]
pub struct Filters {
    rules: Rules,
    /// Turns a value into its (bounded) repr, for `log_args`.
    pub repr: Option<Py<PyAny>>,
    /// The `RESUME` opcode (`log_args` logs a generator's arguments at its
    /// start, not on every resumption).
    pub resume_opcode: u8,
    /// Deepest recorded call, counted in recorded calls (`usize::MAX`: off).
    pub max_depth: usize,
    /// Calls shorter than this many ticks are left out (0: off).
    pub min_ticks: u64,
    /// Top-level calls to record (`sample`).
    pub sample: Sampler,
    /// Top-level spans to record (`sample`, counted apart from calls).
    pub span_sample: Sampler,
}

#[pymethods]
impl Filters {
    #[new]
    #[pyo3(signature = (*, include, exclude, library_paths, stdlib_modules, max_depth, min_duration, log_args, repr, resume_opcode, sample))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        include: Vec<String>,
        exclude: Vec<String>,
        library_paths: Option<Vec<String>>,
        stdlib_modules: Vec<String>,
        max_depth: Option<i64>,
        min_duration: f64,
        log_args: Option<Vec<String>>,
        repr: Option<Py<PyAny>>,
        resume_opcode: u8,
        sample: i64,
    ) -> PyResult<Filters> {
        let max_depth = match max_depth {
            None => usize::MAX,
            Some(d) if d >= 1 => d as usize,
            Some(d) => {
                return Err(PyValueError::new_err(format!(
                    "max_depth must be at least 1 (or None), not {d}"
                )))
            }
        };
        if !(min_duration.is_finite() && (0.0..=3600.0).contains(&min_duration)) {
            return Err(PyValueError::new_err(format!(
                "min_duration must be between 0 and 3600 seconds, not {min_duration}"
            )));
        }
        if sample < 1 {
            return Err(PyValueError::new_err(format!(
                "sample must be at least 1 (1 records every call), not {sample}"
            )));
        }
        if log_args.is_some() && repr.is_none() {
            return Err(PyTypeError::new_err("log_args needs a repr function"));
        }
        let rules = |texts: Vec<String>| texts.iter().map(|t| Rule::new(t)).collect::<Vec<_>>();
        let min_ticks = if min_duration > 0.0 {
            let clock = rtrace::clock::describe();
            rtrace::clock::duration_to_ticks(Duration::from_secs_f64(min_duration), &clock).max(1)
        } else {
            0
        };
        Ok(Filters {
            rules: Rules {
                include: rules(include),
                exclude: rules(exclude),
                libraries: library_paths.map(|paths| Libraries {
                    paths: paths.into_iter().map(with_slash).collect(),
                    modules: stdlib_modules.into_iter().collect(),
                }),
                log_args: log_args.map(rules),
            },
            repr,
            resume_opcode,
            max_depth,
            min_ticks,
            sample: Sampler::new(sample as u64),
            span_sample: Sampler::new(sample as u64),
        })
    }
}

fn with_slash(mut path: String) -> String {
    if !path.ends_with('/') {
        path.push('/');
    }
    path
}

impl Filters {
    /// Whether to record a Python function (`file` is its source).
    pub fn decide(&self, f: &Function<'_>) -> Decision {
        self.rules.decide(f, |libs| libs.contains_file(f.file))
    }

    /// Whether to record a C function.
    pub fn decide_native(&self, py: Python<'_>, f: &Function<'_>) -> Decision {
        match self
            .rules
            .decide(f, |libs| libs.contains_module(py, f.module))
        {
            // C functions have no frame to read arguments from.
            Decision::Record { .. } => Decision::Record { args: false },
            exclude => exclude,
        }
    }

    /// True when lines may be recorded with these filters.
    pub fn allows_lines(&self) -> bool {
        self.min_ticks == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(include: &[&str], exclude: &[&str], log_args: Option<&[&str]>) -> Rules {
        let rules = |v: &[&str]| v.iter().map(|t| Rule::new(t)).collect::<Vec<_>>();
        Rules {
            include: rules(include),
            exclude: rules(exclude),
            libraries: Some(Libraries {
                paths: vec!["/usr/lib/python3.12/".into()],
                modules: ["json".to_string()].into_iter().collect(),
            }),
            log_args: log_args.map(rules),
        }
    }

    impl Rules {
        fn decide_file(&self, f: &Function<'_>) -> Decision {
            self.decide(f, |libs| libs.contains_file(f.file))
        }
    }

    fn f<'a>(module: &'a str, name: &'a str, file: &'a str) -> Function<'a> {
        Function { module, name, file }
    }

    #[test]
    fn include_exclude_and_libraries() {
        let only_app = filters(&["myapp.*"], &["myapp.noisy"], None);
        let rec = Decision::Record { args: false };
        assert_eq!(
            only_app.decide_file(&f("myapp", "main", "/src/myapp/__init__.py")),
            rec
        );
        assert_eq!(
            only_app.decide_file(&f("myapp.db", "Db.get", "/src/myapp/db.py")),
            rec
        );
        assert_eq!(
            only_app.decide_file(&f("myapp.noisy", "tick", "/src/myapp/noisy.py")),
            Decision::Exclude
        );
        assert_eq!(
            only_app.decide_file(&f(
                "json.decoder",
                "decode",
                "/usr/lib/python3.12/json/decoder.py"
            )),
            Decision::Exclude
        );
        // Without include, the library switch decides.
        let no_libs = filters(&[], &[], None);
        assert_eq!(
            no_libs.decide_file(&f("json", "dumps", "/usr/lib/python3.12/json/__init__.py")),
            Decision::Exclude
        );
        assert_eq!(
            no_libs.decide_file(&f("os", "fspath", "<frozen os>")),
            Decision::Exclude
        );
        assert_eq!(
            no_libs.decide_file(&f("__main__", "main", "/src/app.py")),
            rec
        );
        // File patterns.
        let by_file = filters(&["*/src/*", "tool.py"], &[], None);
        assert_eq!(by_file.decide_file(&f("x", "y", "/src/x.py")), rec);
        assert_eq!(by_file.decide_file(&f("t", "y", "/other/tool.py")), rec);
        assert_eq!(
            by_file.decide_file(&f("t", "y", "/other/t.py")),
            Decision::Exclude
        );
    }

    #[test]
    fn log_args_by_name() {
        let some = filters(&[], &[], Some(&["*.handle", "parse"]));
        let args = Decision::Record { args: true };
        assert_eq!(some.decide_file(&f("app", "Server.handle", "/a.py")), args);
        assert_eq!(some.decide_file(&f("app", "parse", "/a.py")), args);
        assert_eq!(
            some.decide_file(&f("app", "other", "/a.py")),
            Decision::Record { args: false }
        );
        let all = filters(&[], &[], Some(&[]));
        assert_eq!(all.decide_file(&f("app", "other", "/a.py")), args);
    }

    #[test]
    fn sampling_keeps_the_first_then_every_nth() {
        let s = Sampler::new(3);
        let kept: Vec<bool> = (0..7).map(|_| s.keep()).collect();
        assert_eq!(kept, [true, false, false, true, false, false, true]);
        assert!((0..5).all(|_| Sampler::new(1).keep()));
    }
}
