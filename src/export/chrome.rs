//! Writes a merged timeline as Chrome trace JSON (the Trace Event Format),
//! for viewers that do not read Perfetto traces (chrome://tracing,
//! Speedscope, ...).
//!
//! The output is the format's JSON array form, written one event per line
//! as the merge drives it. `finish` closes the array; a file cut short
//! before that still loads, because the format lets the closing `]` be
//! missing for exactly that reason.
//!
//! - `ph:"M"` metadata names each process (`<session> (pid N)`, with a
//!   `host=` label, and `pidns=` in a container) and thread.
//! - `call`/`c_call` are `B` events named after the function, category
//!   `python`/`c`, with `module`, `file` and `line` arguments; their returns
//!   are `E` events (`exception: true` for a function left by an
//!   exception); `line` events are thread-scoped instants with a `line`
//!   argument. `ts` is in microseconds with nanosecond digits.
//! - B/E stay balanced per thread: an end that matches no open call is
//!   counted (`unmatched`) and not written, and calls still open when a
//!   stream ends (a truncated stream) are ended there, with the argument
//!   `ended_by: "stream end"` (they never returned in the recording).
//! - A stream's end is a process-scoped instant (`rtrace: stream end` or
//!   `rtrace: stream truncated — process died`) with `events`, `lost` and
//!   `truncated` arguments, plus an `rtrace lost events` counter if any
//!   were lost.
//! - Clocks: each measured estimate of a stream's clock is a value of the
//!   process's counter `rtrace clock` (`offset ns`, `uncertainty ns`); a
//!   clock jump is a process-scoped instant `rtrace: clock jump` (`kind`,
//!   `jump_ns`).
//! - Chrome JSON identifies processes by pid alone: a process whose pid
//!   another process used first (on another host, in another container,
//!   or before it) gets a stand-in pid (`pids`); its name keeps its own.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::event::Kind;
use crate::mark::ArgValue;
use crate::read::Event;
use crate::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use crate::writer::FunctionInfo;

use super::perfetto_format as format;
use super::pids::ViewerPids;

/// Bytes gathered before they are written to the output.
const BUFFER_BYTES: usize = 256 << 10;

/// A `TimelineSink` that writes Chrome trace JSON to `W` as it goes.
pub struct ChromeJsonWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Elements written so far (the next one needs a comma first if any).
    elements: u64,
    streams: HashMap<StreamId, ChromeStream>,
    pids: ViewerPids,
    unmatched: u64,
    watermark_ns: u64,
    finished: bool,
}

/// What the writer keeps per open stream.
struct ChromeStream {
    /// The pid viewers are given.
    pid: u32,
    functions: HashMap<u32, FunctionInfo>,
    /// Open calls per thread: function id and whether it is a C call.
    stacks: HashMap<u64, Vec<(u32, bool)>>,
    first_ts_ns: Option<u64>,
}

impl<W: Write> ChromeJsonWriter<W> {
    /// A writer that writes to `out` (it buffers itself).
    pub fn new(out: W) -> Self {
        ChromeJsonWriter {
            out,
            buf: Vec::with_capacity(BUFFER_BYTES),
            elements: 0,
            streams: HashMap::new(),
            pids: ViewerPids::new(),
            unmatched: 0,
            watermark_ns: 0,
            finished: false,
        }
    }

    /// Returns (`c_`)`return`/`exception` events that matched no open call
    /// and were therefore left out.
    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }

    /// Writes what is buffered to the output and flushes it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }

    /// The output, after `finish`.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Appends one JSON object (given without braces) as an element.
    fn element(&mut self, body: &str) -> io::Result<()> {
        if self.elements == 0 {
            self.buf.extend_from_slice(b"[\n");
        } else {
            self.buf.extend_from_slice(b",\n");
        }
        self.elements += 1;
        self.buf.push(b'{');
        self.buf.extend_from_slice(body.as_bytes());
        self.buf.push(b'}');
        if self.buf.len() >= BUFFER_BYTES {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn stream(&mut self, stream: StreamId) -> io::Result<&mut ChromeStream> {
        self.streams.get_mut(&stream).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "stream {} is not open (no process() yet, or ended)",
                    stream.0
                ),
            )
        })
    }

    fn begin(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        let native = event.kind == Kind::CCall;
        let state = self.stream(stream)?;
        state
            .stacks
            .entry(event.tid)
            .or_default()
            .push((event.function.0, native));
        let mut body = head("B", state.pid, event.tid, event.ts_ns);
        let category = match event.kind {
            Kind::CCall => "c",
            Kind::SpanBegin => USER_CATEGORY,
            _ => "python",
        };
        name_and_category(&mut body, &function_name(state, event.function.0), category);
        let text = text_arg(format::ARG_CALL_ARGS, event);
        match state.functions.get(&event.function.0) {
            _ if event.kind == Kind::SpanBegin => {
                body.push_str(",\"args\":");
                user_args(&mut body, event);
            }
            Some(f) => {
                let _ = write!(
                    body,
                    r#","args":{{"module":{},"file":{},"line":{}{text}}}"#,
                    json_string(&f.module),
                    json_string(&f.file),
                    f.line
                );
            }
            None => {
                let _ = write!(body, r#","args":{{{}}}"#, text.trim_start_matches(','));
            }
        }
        self.element(&body)
    }

    fn end(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        let frame = (event.function.0, event.kind == Kind::CReturn);
        let state = self.stream(stream)?;
        let pid = state.pid;
        let stack = state.stacks.entry(event.tid).or_default();
        let Some(i) = stack.iter().rposition(|open| *open == frame) else {
            self.unmatched += 1;
            return Ok(());
        };
        // Calls left open inside this one end with it.
        let ends = stack.len() - i;
        stack.truncate(i);
        for n in 1..=ends {
            let mut body = head("E", pid, event.tid, event.ts_ns);
            if n == ends && event.kind == Kind::Exception {
                body.push_str(r#","args":{"exception":true}"#);
            }
            if n == ends && event.text.is_some() {
                let text = text_arg(format::ARG_RETURN, event);
                let _ = write!(body, r#","args":{{{}}}"#, text.trim_start_matches(','));
            }
            self.element(&body)?;
        }
        Ok(())
    }

    fn line(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        let state = self.stream(stream)?;
        let mut body = head("i", state.pid, event.tid, event.ts_ns);
        name_and_category(&mut body, &function_name(state, event.function.0), "python");
        let _ = write!(body, r#","s":"t","args":{{"line":{}}}"#, event.line);
        self.element(&body)
    }

    /// A user instant, counter value or flow end. A flow end is an
    /// instant plus the flow event (`s` or `f`) that links it.
    fn mark(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        let state = self.stream(stream)?;
        let pid = state.pid;
        let name = function_name(state, event.function.0);
        let mark = event.mark.as_deref();
        if event.kind == Kind::Counter {
            let mut body = head("C", pid, event.tid, event.ts_ns);
            name_and_category(&mut body, &name, USER_CATEGORY);
            let value = mark.map_or(0.0, |m| m.value);
            let _ = write!(body, r#","args":{{"value":{}}}"#, json_number(value));
            return self.element(&body);
        }
        let mut body = head("i", pid, event.tid, event.ts_ns);
        name_and_category(&mut body, &name, USER_CATEGORY);
        body.push_str(r#","s":"t","args":"#);
        user_args(&mut body, event);
        self.element(&body)?;
        let phase = match event.kind {
            Kind::FlowOut => "s",
            Kind::FlowIn => "f",
            _ => return Ok(()),
        };
        let mut body = head(phase, pid, event.tid, event.ts_ns);
        name_and_category(&mut body, "flow", USER_CATEGORY);
        let id = mark.map_or(0, |m| m.flow_id);
        let _ = write!(body, r#","id":"0x{id:016x}","bp":"e""#);
        self.element(&body)
    }

    fn metadata(&mut self, pid: u32, tid: u64, what: &str, args: &str) -> io::Result<()> {
        let mut body = format!(r#""ph":"M","pid":{pid},"tid":{tid}"#);
        let _ = write!(body, r#","name":"{what}","args":{{{args}}}"#);
        self.element(&body)
    }
}

/// `,"name":"text"` for an event's `log_args` text, or "".
fn text_arg(name: &str, event: &Event) -> String {
    match &event.text {
        Some(text) => format!(",{}:{}", json_string(name), json_string(text)),
        None => String::new(),
    }
}

impl<W: Write> TimelineSink for ChromeJsonWriter<W> {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()> {
        if self.streams.contains_key(&stream) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stream {} announced twice", stream.0),
            ));
        }
        let pid = self.pids.pid(process);
        let name = json_string(&process.display_name());
        self.metadata(pid, 0, "process_name", &format!(r#""name":{name}"#))?;
        let labels = json_string(&format::process_labels(process).join(","));
        self.metadata(pid, 0, "process_labels", &format!(r#""labels":{labels}"#))?;
        self.streams.insert(
            stream,
            ChromeStream {
                pid,
                functions: HashMap::new(),
                stacks: HashMap::new(),
                first_ts_ns: None,
            },
        );
        Ok(())
    }

    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        let state = self.stream(stream)?;
        state.functions.insert(function.id.0, function.clone());
        Ok(())
    }

    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()> {
        let pid = self.stream(stream)?.pid;
        let name = json_string(name);
        self.metadata(pid, tid, "thread_name", &format!(r#""name":{name}"#))
    }

    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        self.watermark_ns = self.watermark_ns.max(event.ts_ns);
        self.stream(stream)?.first_ts_ns.get_or_insert(event.ts_ns);
        match event.kind {
            Kind::Call | Kind::CCall => self.begin(stream, event),
            Kind::SpanBegin => self.begin(stream, event),
            Kind::Return | Kind::Exception | Kind::CReturn | Kind::SpanEnd => {
                self.end(stream, event)
            }
            Kind::Line => self.line(stream, event),
            Kind::Instant | Kind::Counter | Kind::FlowOut | Kind::FlowIn => {
                self.mark(stream, event)
            }
        }
    }

    fn stream_end(&mut self, stream: StreamId, end: &StreamEnd) -> io::Result<()> {
        let watermark = self.watermark_ns;
        let state = self.stream(stream)?;
        let ts_ns = if end.last_ts_ns > 0 {
            end.last_ts_ns
        } else {
            watermark
        };
        let pid = state.pid;
        let first_ts_ns = state.first_ts_ns.unwrap_or(ts_ns).min(ts_ns);
        let mut open: Vec<(u64, usize)> = state.stacks.iter().map(|(&t, s)| (t, s.len())).collect();
        open.sort_unstable();
        self.streams.remove(&stream);
        for (tid, depth) in open {
            for _ in 0..depth {
                let mut body = head("E", pid, tid, ts_ns);
                body.push_str(r#","args":{"ended_by":"stream end"}"#);
                self.element(&body)?;
            }
        }
        let name = if end.truncated {
            format::END_TRUNCATED
        } else {
            format::END_CLEAN
        };
        let mut body = head("i", pid, 0, ts_ns);
        name_and_category(&mut body, name, format::RTRACE_CATEGORY);
        let _ = write!(
            body,
            r#","s":"p","args":{{"events":{},"lost":{},"truncated":{}}}"#,
            end.events, end.lost, end.truncated
        );
        self.element(&body)?;
        if end.lost > 0 {
            for ts in [first_ts_ns, ts_ns] {
                let mut body = head("C", pid, 0, ts);
                // Viewers name a counter "<name> <arg>": "rtrace lost events".
                let _ = write!(
                    body,
                    r#","name":"rtrace","args":{{"lost events":{}}}"#,
                    end.lost
                );
                self.element(&body)?;
            }
        }
        self.flush()
    }

    fn clock_offset(
        &mut self,
        stream: StreamId,
        offset: &crate::timeline::ClockOffset,
    ) -> io::Result<()> {
        let pid = self.stream(stream)?.pid;
        if offset.status == crate::timeline::ClockStatus::Unmeasured {
            return Ok(());
        }
        let mut body = head("C", pid, 0, offset.at_ns);
        let _ = write!(
            body,
            r#","name":"rtrace clock","args":{{"offset ns":{},"uncertainty ns":{}}}"#,
            offset.offset_ns, offset.uncertainty_ns
        );
        self.element(&body)
    }

    fn clock_jump(&mut self, stream: StreamId, jump: &crate::clock::ClockJump) -> io::Result<()> {
        let pid = self.stream(stream)?.pid;
        let mut body = head("i", pid, 0, jump.at_ns);
        name_and_category(&mut body, format::CLOCK_JUMP, format::RTRACE_CATEGORY);
        let _ = write!(
            body,
            r#","s":"p","args":{{"kind":{},"jump_ns":{}}}"#,
            json_string(jump.kind.as_str()),
            jump.size_ns
        );
        self.element(&body)
    }

    /// Writes what is buffered; the array stays open until `finish`.
    fn write_out(&mut self) -> io::Result<()> {
        self.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.finished {
            self.finished = true;
            if self.elements == 0 {
                self.buf.extend_from_slice(b"[");
            }
            self.buf.extend_from_slice(b"\n]\n");
        }
        self.flush()
    }
}

/// Category of user events (spans, instants, counters, flows).
const USER_CATEGORY: &str = "user";

/// Appends a user event's arguments as a JSON object.
fn user_args(body: &mut String, event: &Event) {
    body.push('{');
    let args = event.mark.as_deref().map_or(&[][..], |m| &m.args[..]);
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&json_string(&arg.key));
        body.push(':');
        match &arg.value {
            ArgValue::Int(v) => {
                let _ = write!(body, "{v}");
            }
            ArgValue::Float(v) => body.push_str(&json_number(*v)),
            ArgValue::Str(v) => body.push_str(&json_string(v)),
            ArgValue::Bool(v) => {
                let _ = write!(body, "{v}");
            }
        }
    }
    body.push('}');
}

/// A float as JSON (which has no NaN or infinities: those become null).
fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".to_owned()
    }
}

/// The fields every event has.
fn head(phase: &str, pid: u32, tid: u64, ts_ns: u64) -> String {
    format!(
        r#""ph":"{phase}","pid":{pid},"tid":{tid},"ts":{}"#,
        micros(ts_ns)
    )
}

fn name_and_category(body: &mut String, name: &str, category: &str) {
    let _ = write!(
        body,
        r#","name":{},"cat":{}"#,
        json_string(name),
        json_string(category)
    );
}

fn function_name(state: &ChromeStream, id: u32) -> String {
    match state.functions.get(&id) {
        Some(f) => f.name.clone(),
        None => format!("<function {id}>"),
    }
}

/// Nanoseconds as microseconds with three exact decimals.
fn micros(ts_ns: u64) -> String {
    format!("{}.{:03}", ts_ns / 1000, ts_ns % 1000)
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_keep_every_nanosecond() {
        assert_eq!(micros(0), "0.000");
        assert_eq!(micros(1_234_567_891), "1234567.891");
        assert_eq!(micros(u64::MAX), "18446744073709551.615");
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
    }
}
