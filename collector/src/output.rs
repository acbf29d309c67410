//! Opens the output file in the format its name asks for: Chrome trace
//! JSON for `.json`, a Perfetto trace otherwise.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rtrace::export::chrome::ChromeJsonWriter;
use rtrace::export::perfetto::PerfettoWriter;
use rtrace::read::Event;
use rtrace::timeline::{ProcessInfo, StreamEnd, StreamId, TimelineSink};
use rtrace::FunctionInfo;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Perfetto,
    ChromeJson,
}

impl Format {
    /// The format a file name asks for.
    pub fn for_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::ChromeJson,
            _ => Format::Perfetto,
        }
    }
}

/// Creates `path` and a timeline writer on it. Its write errors name the
/// file ("writing t.pftrace: No space left on device").
pub fn create(path: &Path) -> Result<Box<dyn TimelineSink + Send>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let out = BufWriter::with_capacity(1 << 20, file);
    let inner: Box<dyn TimelineSink + Send> = match Format::for_path(path) {
        Format::Perfetto => Box::new(PerfettoWriter::new(out)),
        Format::ChromeJson => Box::new(ChromeJsonWriter::new(out)),
    };
    Ok(Box::new(Named {
        inner,
        path: path.to_owned(),
    }))
}

/// A timeline writer whose errors say which file failed.
struct Named {
    inner: Box<dyn TimelineSink + Send>,
    path: PathBuf,
}

impl Named {
    fn name<T>(&self, result: io::Result<T>) -> io::Result<T> {
        result
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", self.path.display())))
    }
}

impl TimelineSink for Named {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()> {
        let result = self.inner.process(stream, process);
        self.name(result)
    }
    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        let result = self.inner.function(stream, function);
        self.name(result)
    }
    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()> {
        let result = self.inner.thread(stream, tid, name);
        self.name(result)
    }
    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        let result = self.inner.event(stream, event);
        self.name(result)
    }
    fn stream_end(&mut self, stream: StreamId, end: &StreamEnd) -> io::Result<()> {
        let result = self.inner.stream_end(stream, end);
        self.name(result)
    }
    fn finish(&mut self) -> io::Result<()> {
        let result = self.inner.finish();
        self.name(result)
    }
}
