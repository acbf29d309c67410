//! Synthetic merged timelines for the export tests: processes with threads
//! that call Python and C functions in a random but well-nested way, the
//! way the merge drives a `TimelineSink`.

#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::io;

use rtrace::event::{FunctionId, Kind};
use rtrace::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use rtrace::{Event, FunctionInfo};

/// One call of a `TimelineSink` method.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Process(StreamId, ProcessInfo),
    Function(StreamId, FunctionInfo),
    Thread(StreamId, u64, String),
    Event(StreamId, Event),
    End(StreamId, StreamEnd),
}

/// Drives `sink` with `calls`, then finishes it.
pub fn play(calls: &[Call], sink: &mut dyn TimelineSink) -> io::Result<()> {
    for call in calls {
        match call {
            Call::Process(s, info) => sink.process(*s, info)?,
            Call::Function(s, f) => sink.function(*s, f)?,
            Call::Thread(s, tid, name) => sink.thread(*s, *tid, name)?,
            Call::Event(s, e) => sink.event(*s, e)?,
            Call::End(s, end) => sink.stream_end(*s, end)?,
        }
    }
    sink.finish()
}

/// A sink that records what it is told.
#[derive(Debug, Default)]
pub struct Recorded {
    pub calls: Vec<Call>,
    pub finished: bool,
}

impl TimelineSink for Recorded {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()> {
        self.calls.push(Call::Process(stream, process.clone()));
        Ok(())
    }
    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        self.calls.push(Call::Function(stream, function.clone()));
        Ok(())
    }
    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()> {
        self.calls.push(Call::Thread(stream, tid, name.to_owned()));
        Ok(())
    }
    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        self.calls.push(Call::Event(stream, event.clone()));
        Ok(())
    }
    fn stream_end(&mut self, stream: StreamId, end: &StreamEnd) -> io::Result<()> {
        self.calls.push(Call::End(stream, *end));
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        Ok(())
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub processes: u32,
    pub threads: u32,
    pub functions: u32,
    /// Events in total (about; calls still open at the end are closed).
    pub events: u64,
    /// Add `line` events, exceptions and a late (older) event.
    pub extras: bool,
    /// The last process dies: no returns for its open calls, lost events.
    pub truncate_last: bool,
}

/// Deterministic xorshift random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn process_info(i: u32) -> ProcessInfo {
    ProcessInfo {
        session: format!("svc-{i}"),
        pid: 4000 + i,
        ppid: if i == 0 { 1 } else { 4000 },
        host: if i % 2 == 0 { "box-a" } else { "box-b" }.into(),
        boot_id: format!("boot-{}", i % 2),
        pid_namespace: 4026531836,
        process_start_ticks: 1000 + u64::from(i),
        argv: vec!["svc.py".into(), "--id".into(), i.to_string()],
        start_unix_ns: 1_700_000_000_000_000_000 + u64::from(i),
        recorder: "CPython 3.12 (sys.monitoring)".into(),
        relayed_by: Vec::new(),
    }
}

/// Function `k` of a process: one in five is a C function.
pub fn function_info(k: u32) -> FunctionInfo {
    if k % 5 == 4 {
        FunctionInfo {
            id: FunctionId(k),
            name: format!("list.op{k}"),
            module: "builtins".into(),
            file: String::new(),
            line: 0,
            native: true,
        }
    } else {
        FunctionInfo {
            id: FunctionId(k),
            name: format!("Handler{}.step{k}", k % 7),
            module: format!("app.mod{}", k % 11),
            file: format!("/srv/app/mod{}.py", k % 11),
            line: 10 + k,
            native: false,
        }
    }
}

/// A thread's state while generating.
struct Thread {
    tid: u64,
    stack: Vec<u32>,
    named: bool,
}

/// Generates a timeline as the merge would deliver it.
pub fn generate(spec: &Spec) -> Vec<Call> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut calls = Vec::with_capacity(spec.events as usize + 64);
    let mut threads: Vec<(StreamId, Thread)> = Vec::new();
    let mut sent: HashMap<(u32, u32), ()> = HashMap::new();
    let mut counts = vec![0u64; spec.processes as usize];
    for p in 0..spec.processes {
        calls.push(Call::Process(StreamId(p), process_info(p)));
        for t in 0..spec.threads {
            let thread = Thread {
                tid: u64::from(4000 + p + t * 100),
                stack: Vec::new(),
                named: false,
            };
            threads.push((StreamId(p), thread));
        }
    }
    let mut ts = 5_000_000_000_000u64;
    let mut emitted = 0u64;
    while emitted < spec.events {
        ts += 50 + rng.below(3000);
        let i = rng.below(threads.len() as u64) as usize;
        let (stream, thread) = &mut threads[i];
        let stream = *stream;
        if !thread.named {
            thread.named = true;
            let name = if thread.tid == u64::from(4000 + stream.0) {
                "MainThread".to_owned()
            } else {
                format!("worker-{}", thread.tid)
            };
            calls.push(Call::Thread(stream, thread.tid, name));
        }
        let top = thread.stack.last().copied();
        let call = top.is_none() || (thread.stack.len() < 40 && rng.below(100) < 52);
        let (kind, function, line) = if call {
            let k = rng.below(u64::from(spec.functions)) as u32;
            if sent.insert((stream.0, k), ()).is_none() {
                calls.push(Call::Function(stream, function_info(k)));
            }
            thread.stack.push(k);
            let kind = if function_info(k).native {
                Kind::CCall
            } else {
                Kind::Call
            };
            (kind, k, 0)
        } else {
            let k = top.unwrap_or(0);
            let native = function_info(k).native;
            if spec.extras && !native && rng.below(100) < 10 {
                (Kind::Line, k, 11 + k + rng.below(20) as u32)
            } else {
                thread.stack.pop();
                let kind = match (native, spec.extras && rng.below(100) < 5) {
                    (true, _) => Kind::CReturn,
                    (false, true) => Kind::Exception,
                    (false, false) => Kind::Return,
                };
                (kind, k, 0)
            }
        };
        // log_args texts on some Python calls and returns.
        let logged = matches!(kind, Kind::Call | Kind::Return);
        let text = (spec.extras && logged && rng.below(100) < 10)
            .then(|| std::sync::Arc::from(format!("x={function}, s='é\"\\'")));
        let event = Event {
            ts_ns: ts,
            tid: thread.tid,
            kind,
            function: FunctionId(function),
            line,
            mark: None,
            text,
        };
        calls.push(Call::Event(stream, event.clone()));
        counts[stream.0 as usize] += 1;
        emitted += 1;
        if spec.extras && emitted == spec.events / 2 {
            // A late event: older than the one before it on its thread.
            if sent.insert((stream.0, 0), ()).is_none() {
                calls.push(Call::Function(stream, function_info(0)));
            }
            let late = Event {
                ts_ns: ts - 700,
                kind: Kind::Line,
                function: FunctionId(0),
                line: 10,
                text: None,
                ..event.clone()
            };
            calls.push(Call::Event(stream, late));
            counts[stream.0 as usize] += 1;
        }
    }
    finish_streams(spec, &mut calls, &mut threads, &mut counts, ts)
}

/// Closes what is open (except in a truncated stream) and ends the streams.
fn finish_streams(
    spec: &Spec,
    calls: &mut Vec<Call>,
    threads: &mut [(StreamId, Thread)],
    counts: &mut [u64],
    mut ts: u64,
) -> Vec<Call> {
    let last = spec.processes.saturating_sub(1);
    for (stream, thread) in threads.iter_mut() {
        if spec.truncate_last && stream.0 == last {
            continue;
        }
        while let Some(k) = thread.stack.pop() {
            ts += 100;
            let kind = if function_info(k).native {
                Kind::CReturn
            } else {
                Kind::Return
            };
            let event = Event {
                ts_ns: ts,
                tid: thread.tid,
                kind,
                function: FunctionId(k),
                line: 0,
                mark: None,
                text: None,
            };
            calls.push(Call::Event(*stream, event));
            counts[stream.0 as usize] += 1;
        }
    }
    for p in 0..spec.processes {
        let truncated = spec.truncate_last && p == last;
        let end = StreamEnd {
            events: counts[p as usize],
            lost: if truncated { 1234 } else { 0 },
            truncated,
            last_ts_ns: ts,
        };
        calls.push(Call::End(StreamId(p), end));
    }
    std::mem::take(calls)
}

/// Two containers of one host (pid namespaces 11 and 12), each with its
/// pid 1 and that process's child, pid 7: four processes, two of each pid.
/// Each calls and returns from one function on its main thread.
pub fn containers() -> Vec<Call> {
    let mut calls = Vec::new();
    let mut ts_ns = 1_000;
    for (i, (namespace, pid, ppid)) in [(11, 1, 0), (11, 7, 1), (12, 1, 0), (12, 7, 1)]
        .into_iter()
        .enumerate()
    {
        let stream = StreamId(i as u32);
        let info = ProcessInfo {
            session: format!("ns{namespace}"),
            pid,
            ppid,
            host: "box".into(),
            boot_id: "boot".into(),
            pid_namespace: namespace,
            ..ProcessInfo::default()
        };
        calls.push(Call::Process(stream, info));
        calls.push(Call::Function(stream, function_info(i as u32)));
        calls.push(Call::Thread(stream, u64::from(pid), "MainThread".into()));
        for kind in [Kind::Call, Kind::Return] {
            ts_ns += 100;
            let event = Event {
                ts_ns,
                tid: u64::from(pid),
                kind,
                function: FunctionId(i as u32),
                line: 0,
                mark: None,
                text: None,
            };
            calls.push(Call::Event(stream, event));
        }
        let end = StreamEnd {
            events: 2,
            last_ts_ns: ts_ns,
            ..StreamEnd::default()
        };
        calls.push(Call::End(stream, end));
    }
    calls
}
