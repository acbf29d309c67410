//! `rtrace stats` / `rtrace-collect stats --functions`: per process and
//! per function, how many calls and how much time, from stream files and
//! merged timelines alike.
//!
//! A call's time runs from its call event to its return. Per function:
//! `calls`; `total`, the time inside it and what it called, a recursive
//! call counted once (in its outermost call, as cProfile's cumulative
//! time); `self`, the time inside it minus the time of the calls it made;
//! `mean`, the average time of one call. Per process the self times add
//! up to the time of the top-level calls (those with no recorded caller on
//! their thread). Calls a truncated recording left open end at their
//! thread's last event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rtrace::export::chrome::json_string;
use rtrace::idmap::IdMap;
use rtrace::input::Input;
use rtrace::timeline::{PidSpace, ProcessInfo, StreamId};
use rtrace::{sanitize, Event, FunctionId};

use crate::status::Progress;

/// One function of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Qualified name (`Server.handle`, `list.append`).
    pub name: String,
    pub module: String,
    /// Source file ("" for C functions).
    pub file: String,
    /// First line.
    pub line: u32,
    pub calls: u64,
    /// Time inside, recursive calls counted once.
    pub total_ns: u64,
    /// Time inside minus the time of the calls it made.
    pub self_ns: u64,
    /// Sum of every call's own duration (for the mean).
    pub calls_ns: u64,
}

impl FunctionStats {
    /// Average duration of one call.
    pub fn mean_ns(&self) -> u64 {
        self.calls_ns.checked_div(self.calls).unwrap_or(0)
    }

    /// `module.name`, or `name` alone.
    pub fn qualified(&self) -> String {
        if self.module.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.module, self.name)
        }
    }
}

/// What one process did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessProfile {
    pub session: String,
    pub pid: u32,
    pub host: String,
    /// The process's pid namespace, if one of its own (a container's):
    /// what tells apart two processes of one host name and pid.
    pub pid_namespace: Option<u64>,
    /// Time of the top-level calls; equals the sum of `self_ns`.
    pub top_level_ns: u64,
    pub functions: Vec<FunctionStats>,
}

/// How to order functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    SelfTime,
    Total,
    Calls,
    Mean,
}

impl std::str::FromStr for SortBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "self" => SortBy::SelfTime,
            "total" => SortBy::Total,
            "calls" => SortBy::Calls,
            "mean" => SortBy::Mean,
            _ => return Err(format!("sort by self, total, calls or mean, not {s:?}")),
        })
    }
}

impl ProcessProfile {
    /// The functions, most first by `sort`, at most `top` of them (0: all).
    pub fn top(&self, sort: SortBy, top: usize) -> Vec<&FunctionStats> {
        let mut functions: Vec<&FunctionStats> = self.functions.iter().collect();
        functions.sort_by_key(|f| {
            let key = match sort {
                SortBy::SelfTime => f.self_ns,
                SortBy::Total => f.total_ns,
                SortBy::Calls => f.calls,
                SortBy::Mean => f.mean_ns(),
            };
            (std::cmp::Reverse(key), f.qualified())
        });
        if top > 0 {
            functions.truncate(top);
        }
        functions
    }
}

/// An open call on a thread.
struct Open {
    function: usize,
    start_ns: u64,
    /// Time of the calls it made (closed so far).
    child_ns: u64,
}

/// One thread's open calls and how many of each function are open.
#[derive(Default)]
struct ThreadState {
    stack: Vec<Open>,
    active: IdMap<usize, u32>,
    last_ns: u64,
}

/// Accumulates the profiles of every process of several files.
#[derive(Default)]
pub struct Profiler {
    processes: Vec<ProcessProfile>,
    /// By process (`ProcessInfo::identity`) and session.
    by_process: HashMap<((PidSpace, u32, u64), String), usize>,
    /// Per process: function identity → index in its `functions`.
    by_function: Vec<HashMap<(String, String, String, u32), usize>>,
    threads: IdMap<(usize, u64), ThreadState>,
}

impl Profiler {
    /// Reads a whole file (stream or merged timeline) into the profiles.
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        self.add_file_with_progress(path, |_| {})
    }

    /// `add_file`, calling `on_progress` with the bytes of the file read so
    /// far every few thousand events and once at its end.
    pub fn add_file_with_progress(
        &mut self,
        path: &Path,
        mut on_progress: impl FnMut(u64),
    ) -> Result<()> {
        let mut input = Input::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut ids: IdMap<(StreamId, FunctionId), (usize, usize)> = IdMap::default();
        let mut until_progress = PROGRESS_EVENTS;
        while let Some((stream, event)) = input.next_event()? {
            until_progress -= 1;
            if until_progress == 0 {
                on_progress(input.bytes_read());
                until_progress = PROGRESS_EVENTS;
            }
            let key = (stream, event.function);
            let (process, function) = match ids.get(&key) {
                Some(&found) => found,
                None => {
                    let found = self.resolve(&input, stream, event.function);
                    ids.insert(key, found);
                    found
                }
            };
            self.event(process, function, &event);
        }
        on_progress(input.bytes_read());
        self.finish_threads();
        Ok(())
    }

    /// The profiles, in the order the processes were first seen.
    pub fn finish(mut self) -> Vec<ProcessProfile> {
        self.finish_threads();
        self.processes
    }

    fn resolve(&mut self, input: &Input, stream: StreamId, id: FunctionId) -> (usize, usize) {
        let process = input.process(stream).unwrap_or_default();
        let p = self.process_index(&process);
        let info = input.function(stream, id);
        let name = info.map_or_else(|| format!("<function #{}>", id.0), |f| f.name.clone());
        let module = info.map_or_else(String::new, |f| f.module.clone());
        let file = info.map_or_else(String::new, |f| f.file.clone());
        let line = info.map_or(0, |f| f.line);
        let functions = &mut self.processes[p].functions;
        let f = *self.by_function[p]
            .entry((module.clone(), name.clone(), file.clone(), line))
            .or_insert_with(|| {
                functions.push(FunctionStats {
                    name,
                    module,
                    file,
                    line,
                    ..FunctionStats::default()
                });
                functions.len() - 1
            });
        (p, f)
    }

    fn process_index(&mut self, process: &ProcessInfo) -> usize {
        // Not the pid alone: processes of two hosts or containers (or a
        // reused pid) can share one, and their threads their tids.
        let key = (process.identity(), process.session.clone());
        if let Some(&p) = self.by_process.get(&key) {
            return p;
        }
        self.processes.push(ProcessProfile {
            session: process.session.clone(),
            pid: process.pid,
            host: process.host.clone(),
            pid_namespace: process.own_pid_namespace(),
            ..ProcessProfile::default()
        });
        self.by_function.push(HashMap::new());
        self.by_process.insert(key, self.processes.len() - 1);
        self.processes.len() - 1
    }

    fn event(&mut self, process: usize, function: usize, event: &Event) {
        let thread = self.threads.entry((process, event.tid)).or_default();
        thread.last_ns = thread.last_ns.max(event.ts_ns);
        if event.kind.opens() {
            *thread.active.entry(function).or_default() += 1;
            thread.stack.push(Open {
                function,
                start_ns: event.ts_ns,
                child_ns: 0,
            });
        } else if event.kind.closes() {
            // The innermost open call of this function, and any left open
            // inside it, end here.
            let Some(at) = thread.stack.iter().rposition(|o| o.function == function) else {
                return;
            };
            while thread.stack.len() > at {
                close(thread, &mut self.processes[process], event.ts_ns);
            }
        }
    }

    /// Ends the calls still open, at their thread's last event.
    fn finish_threads(&mut self) {
        for ((process, _), mut thread) in self.threads.drain() {
            let end = thread.last_ns;
            while !thread.stack.is_empty() {
                close(&mut thread, &mut self.processes[process], end);
            }
        }
    }
}

/// Closes the innermost open call of `thread` at `end_ns`.
fn close(thread: &mut ThreadState, profile: &mut ProcessProfile, end_ns: u64) {
    let Some(open) = thread.stack.pop() else {
        return;
    };
    let duration = end_ns.saturating_sub(open.start_ns);
    let stats = &mut profile.functions[open.function];
    stats.calls += 1;
    stats.calls_ns += duration;
    stats.self_ns += duration.saturating_sub(open.child_ns);
    let active = thread.active.entry(open.function).or_default();
    *active = active.saturating_sub(1);
    if *active == 0 {
        stats.total_ns += duration;
    }
    match thread.stack.last_mut() {
        Some(parent) => parent.child_ns += duration,
        None => profile.top_level_ns += duration,
    }
}

/// Profiles of every process in `paths`.
pub fn profile_files(paths: &[PathBuf]) -> Result<Vec<ProcessProfile>> {
    profile_files_with_progress(paths, |_| {})
}

/// Events between calls of the progress callbacks.
const PROGRESS_EVENTS: u32 = 16_384;

/// `profile_files`, calling `on_progress` every few thousand events with
/// the bytes read of all the files.
pub fn profile_files_with_progress(
    paths: &[PathBuf],
    mut on_progress: impl FnMut(Progress),
) -> Result<Vec<ProcessProfile>> {
    let total = Progress::total_of(paths.iter().map(PathBuf::as_path));
    let mut profiler = Profiler::default();
    let mut done = 0;
    for path in paths {
        let mut last = 0;
        profiler.add_file_with_progress(path, |read| {
            last = read;
            on_progress(Progress {
                read: done + read,
                total,
            })
        })?;
        done += last;
    }
    Ok(profiler.finish())
}

/// Milliseconds with three decimals.
fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// The profiles as aligned tables, one per process.
pub fn profile_table(profiles: &[ProcessProfile], sort: SortBy, top: usize) -> String {
    // For a terminal: names made printable as the collector does (a stream
    // file read here has not been through one). `--json` escapes its own.
    let name = |text: &str| sanitize::printable(text, sanitize::MAX_NAME_CHARS);
    let symbol = |text: &str| sanitize::printable(text, sanitize::MAX_SYMBOL_CHARS);
    let mut out = String::new();
    for p in profiles {
        let calls: u64 = p.functions.iter().map(|f| f.calls).sum();
        let namespace = p
            .pid_namespace
            .map_or_else(String::new, |n| format!(", pidns {n}"));
        out.push_str(&format!(
            "{} (pid {}, host {}{namespace}): {} calls in {} functions, {} ms in top-level \
             calls\n",
            name(&p.session),
            p.pid,
            name(&p.host),
            calls,
            p.functions.len(),
            ms(p.top_level_ns)
        ));
        let mut rows = vec![[
            "calls", "total ms", "self ms", "mean ms", "function", "file",
        ]
        .map(String::from)
        .to_vec()];
        for f in p.top(sort, top) {
            let place = if f.file.is_empty() {
                String::new()
            } else {
                format!("{}:{}", symbol(&f.file), f.line)
            };
            rows.push(vec![
                f.calls.to_string(),
                ms(f.total_ns),
                ms(f.self_ns),
                ms(f.mean_ns()),
                symbol(&f.qualified()),
                place,
            ]);
        }
        out.push_str(&crate::report::aligned_right(&rows, 4));
        out.push('\n');
    }
    out
}

/// The profiles as JSON lines: one object per function (process: the pid,
/// session, host, pid_namespace: its own or null, name, module, file,
/// line, calls, total_ns, self_ns, mean_ns).
pub fn profile_json(profiles: &[ProcessProfile], sort: SortBy, top: usize) -> String {
    let mut out = String::new();
    for p in profiles {
        for f in p.top(sort, top) {
            out.push_str(&format!(
                "{{\"process\":{},\"session\":{},\"host\":{},\"pid_namespace\":{},\
                 \"name\":{},\"module\":{},\"file\":{},\"line\":{},\"calls\":{},\
                 \"total_ns\":{},\"self_ns\":{},\"mean_ns\":{}}}\n",
                p.pid,
                json_string(&p.session),
                json_string(&p.host),
                p.pid_namespace
                    .map_or_else(|| "null".to_owned(), |n| n.to_string()),
                json_string(&f.name),
                json_string(&f.module),
                json_string(&f.file),
                f.line,
                f.calls,
                f.total_ns,
                f.self_ns,
                f.mean_ns()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtrace::Kind;

    fn run(events: &[(u64, u64, Kind, &str)]) -> ProcessProfile {
        let mut profiler = Profiler::default();
        let p = profiler.process_index(&ProcessInfo {
            session: "s".into(),
            pid: 1,
            ..ProcessInfo::default()
        });
        let mut index = HashMap::new();
        for &(ts_ns, tid, kind, name) in events {
            let f = *index.entry(name).or_insert_with(|| {
                let functions = &mut profiler.processes[p].functions;
                functions.push(FunctionStats {
                    name: name.into(),
                    ..FunctionStats::default()
                });
                functions.len() - 1
            });
            let event = Event {
                ts_ns,
                tid,
                kind,
                function: FunctionId(f as u32),
                line: 0,
                mark: None,
                text: None,
            };
            profiler.event(p, f, &event);
        }
        profiler.finish().remove(0)
    }

    fn get<'a>(p: &'a ProcessProfile, name: &str) -> &'a FunctionStats {
        p.functions.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn self_times_add_up_and_recursion_counts_once() {
        use Kind::{Call, Return};
        let p = run(&[
            (0, 1, Call, "a"),
            (10, 1, Call, "b"),
            (30, 1, Return, "b"),
            (40, 1, Call, "c"),
            (50, 1, Call, "c"),
            (60, 1, Return, "c"),
            (90, 1, Return, "c"),
            (100, 1, Return, "a"),
            // Another thread, interleaved in time.
            (5, 2, Call, "b"),
            (25, 2, Return, "b"),
        ]);
        let (a, b, c) = (get(&p, "a"), get(&p, "b"), get(&p, "c"));
        assert_eq!((a.calls, a.total_ns, a.self_ns), (1, 100, 30));
        assert_eq!(
            (b.calls, b.total_ns, b.self_ns, b.mean_ns()),
            (2, 40, 40, 20)
        );
        // c's outer call (50 ns) holds the inner one (10 ns): total once.
        assert_eq!(
            (c.calls, c.total_ns, c.self_ns, c.mean_ns()),
            (2, 50, 50, 30)
        );
        let self_sum: u64 = p.functions.iter().map(|f| f.self_ns).sum();
        assert_eq!(self_sum, p.top_level_ns);
        assert_eq!(p.top_level_ns, 120);
    }

    #[test]
    fn unmatched_returns_are_ignored_and_open_calls_end_at_the_last_event() {
        use Kind::{CCall, CReturn, Call, Return};
        let p = run(&[
            (0, 1, Return, "stray"),
            (10, 1, Call, "a"),
            (20, 1, CCall, "len"),
            // `a` returns with `len` still open: both end here.
            (30, 1, Return, "a"),
            (40, 1, Call, "b"),
            (45, 1, CCall, "sleep"),
            (70, 1, CReturn, "sleep"),
        ]);
        assert_eq!(get(&p, "stray").calls, 0);
        assert_eq!((get(&p, "len").calls, get(&p, "len").total_ns), (1, 10));
        assert_eq!((get(&p, "a").total_ns, get(&p, "a").self_ns), (20, 10));
        // b never returned: it ends at the thread's last event.
        assert_eq!((get(&p, "b").calls, get(&p, "b").total_ns), (1, 30));
        let self_sum: u64 = p.functions.iter().map(|f| f.self_ns).sum();
        assert_eq!(self_sum, p.top_level_ns);
    }

    #[test]
    fn tables_align_and_json_escapes() {
        let p = run(&[
            (0, 1, Kind::Call, "a\"b"),
            (1_500_000, 1, Kind::Return, "a\"b"),
        ]);
        let table = profile_table(std::slice::from_ref(&p), SortBy::Total, 0);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("s (pid 1, host ): 1 calls in 1 functions, 1.500 ms"));
        assert_eq!(lines[1].find("function"), lines[2].find("a\"b"));
        assert!(lines[2].starts_with("    1     1.500    1.500    1.500  a\"b"));
        let json = profile_json(&[p], SortBy::SelfTime, 1);
        assert!(json.contains(r#""name":"a\"b""#) && json.contains(r#""total_ns":1500000"#));
    }

    #[test]
    fn processes_sharing_a_pid_in_two_containers_are_two_profiles() {
        use std::collections::HashSet;
        let mut profiler = Profiler::default();
        let process = |namespace, start| ProcessInfo {
            session: "s".into(),
            pid: 1,
            host: "box".into(),
            pid_namespace: namespace,
            process_start_ticks: start,
            ..ProcessInfo::default()
        };
        let a = profiler.process_index(&process(11, 100));
        assert_eq!(profiler.process_index(&process(11, 100)), a, "one process");
        let b = profiler.process_index(&process(12, 100));
        let reused = profiler.process_index(&process(11, 900));
        assert_eq!(HashSet::from([a, b, reused]).len(), 3);
        // Their headers and JSON say which namespace is which.
        let profiles = profiler.finish();
        let table = profile_table(&profiles, SortBy::Total, 0);
        assert!(table.contains("s (pid 1, host box, pidns 12): "), "{table}");
        let p = &profiles[b..=b];
        let mut with_a_function = p.to_vec();
        with_a_function[0].functions.push(FunctionStats::default());
        let json = profile_json(&with_a_function, SortBy::Total, 0);
        assert!(json.contains(r#""pid_namespace":12"#), "{json}");
    }
}
