//! Opens the output file in the format its name asks for: Chrome trace
//! JSON for `.json`, a Perfetto trace otherwise. A Perfetto trace is
//! written by a thread of its own (`BackgroundFile`), so that the merge
//! does not wait for the kernel to copy each buffer.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use rtrace::clock::ClockJump;
use rtrace::export::chrome::ChromeJsonWriter;
use rtrace::export::perfetto::{PerfettoOut, PerfettoWriter};
use rtrace::read::{Encoded, Event};
use rtrace::timeline::{
    ClockOffset, ProcessInfo, StreamEncoder, StreamEnd, StreamId, TimelineSink,
};
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

    /// The format named `chrome` or `perfetto` (as `rtrace export --format`
    /// says it).
    pub fn named(name: &str) -> Option<Format> {
        match name {
            "chrome" => Some(Format::ChromeJson),
            "perfetto" => Some(Format::Perfetto),
            _ => None,
        }
    }
}

/// Creates `path` and a timeline writer on it, in the format its name asks
/// for (`Format::for_path`). Its write errors name the file ("writing
/// t.pftrace: No space left on device").
pub fn create(path: &Path) -> Result<OutputFile> {
    create_as(path, Format::for_path(path))
}

/// `create`, in `format` whatever the name says.
pub fn create_as(path: &Path, format: Format) -> Result<OutputFile> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let writer = match format {
        // The Perfetto writer buffers itself.
        Format::Perfetto => Writer::Perfetto(PerfettoWriter::new(BackgroundFile::new(file)?)),
        Format::ChromeJson => Writer::ChromeJson(ChromeJsonWriter::new(BufWriter::with_capacity(
            1 << 20,
            file,
        ))),
    };
    Ok(OutputFile {
        writer,
        path: path.to_owned(),
    })
}

/// `create_as`, refused when `path` is one of `inputs` under any name (the
/// same file): creating it would truncate what is being read.
pub fn create_apart_from(path: &Path, inputs: &[PathBuf], format: Format) -> Result<OutputFile> {
    if let Some(input) = same_file_among(path, inputs) {
        anyhow::bail!(
            "the output {} is the input {}: writing it would destroy what is being read; \
             give -o another name",
            path.display(),
            input.display()
        );
    }
    create_as(path, format)
}

/// The input that is the file at `path` (same device and inode), if any.
fn same_file_among<'a>(path: &Path, inputs: &'a [PathBuf]) -> Option<&'a PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let out = std::fs::metadata(path).ok()?;
    inputs.iter().find(|input| {
        std::fs::metadata(input).is_ok_and(|m| m.dev() == out.dev() && m.ino() == out.ino())
    })
}

/// The merged timeline's file: its writer, whose errors say which file
/// failed.
///
/// The writer is an enum, not a `Box<dyn TimelineSink>`: the merge hands
/// it a run of a few events at a time when streams interleave finely, and
/// the two dynamic calls per run (this wrapper's and the writer's) cost
/// ~7 instructions an event there (1.2 % of an offline merge of four
/// streams).
pub struct OutputFile {
    writer: Writer,
    path: PathBuf,
}

enum Writer {
    Perfetto(PerfettoWriter<BackgroundFile>),
    ChromeJson(ChromeJsonWriter<BufWriter<File>>),
}

/// Calls a `TimelineSink` method on whichever writer `$file` has, and
/// names the file in its error.
macro_rules! on_writer {
    ($file:ident, $w:ident => $call:expr) => {{
        let result = match &mut $file.writer {
            Writer::Perfetto($w) => $call,
            Writer::ChromeJson($w) => $call,
        };
        match result {
            Ok(value) => Ok(value),
            Err(error) => Err($file.named(error)),
        }
    }};
}

impl OutputFile {
    #[cold]
    fn named(&self, error: io::Error) -> io::Error {
        io::Error::new(
            error.kind(),
            format!("writing {}: {error}", self.path.display()),
        )
    }
}

impl TimelineSink for OutputFile {
    fn process(&mut self, stream: StreamId, process: &ProcessInfo) -> io::Result<()> {
        on_writer!(self, w => w.process(stream, process))
    }
    fn function(&mut self, stream: StreamId, function: &FunctionInfo) -> io::Result<()> {
        on_writer!(self, w => w.function(stream, function))
    }
    fn thread(&mut self, stream: StreamId, tid: u64, name: &str) -> io::Result<()> {
        on_writer!(self, w => w.thread(stream, tid, name))
    }
    fn event(&mut self, stream: StreamId, event: &Event) -> io::Result<()> {
        on_writer!(self, w => w.event(stream, event))
    }
    fn events(&mut self, stream: StreamId, events: &[Event]) -> io::Result<()> {
        on_writer!(self, w => w.events(stream, events))
    }
    fn stream_end(&mut self, stream: StreamId, end: &StreamEnd) -> io::Result<()> {
        on_writer!(self, w => w.stream_end(stream, end))
    }
    fn finish(&mut self) -> io::Result<()> {
        on_writer!(self, w => w.finish())
    }
    fn stream_encoder(&mut self, stream: StreamId) -> Option<Box<dyn StreamEncoder>> {
        match &mut self.writer {
            Writer::Perfetto(w) => w.stream_encoder(stream),
            Writer::ChromeJson(w) => w.stream_encoder(stream),
        }
    }
    fn encoded_events(&mut self, stream: StreamId, ts_ns: &[u64], bytes: &[u8]) -> io::Result<()> {
        on_writer!(self, w => w.encoded_events(stream, ts_ns, bytes))
    }
    fn recycle(&mut self, encoded: Encoded) {
        match &mut self.writer {
            Writer::Perfetto(w) => w.recycle(encoded),
            Writer::ChromeJson(w) => w.recycle(encoded),
        }
    }
    fn release_spare(&mut self) {
        match &mut self.writer {
            Writer::Perfetto(w) => w.release_spare(),
            Writer::ChromeJson(w) => w.release_spare(),
        }
    }
    fn write_out(&mut self) -> io::Result<()> {
        on_writer!(self, w => w.write_out())
    }
    fn clock_offset(&mut self, stream: StreamId, offset: &ClockOffset) -> io::Result<()> {
        on_writer!(self, w => w.clock_offset(stream, offset))
    }
    fn clock_jump(&mut self, stream: StreamId, jump: &ClockJump) -> io::Result<()> {
        on_writer!(self, w => w.clock_jump(stream, jump))
    }
}

/// Bytes gathered before they go to the writing thread.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks on their way to the file at most (then `write` waits).
const CHUNKS_QUEUED: usize = 4;

enum Job {
    /// The first `len` bytes of the buffer.
    Write(Vec<u8>, usize),
    /// Answers once everything before it is written.
    Flush(Sender<io::Result<()>>),
}

/// A file written by a thread of its own. `write` gathers bytes and hands
/// them over a chunk at a time; a `PerfettoWriter`'s full buffers are
/// handed over as they are (`PerfettoOut`), with no copy; `flush` waits
/// until the file has them. The first error writing the file is returned
/// by every later call.
pub struct BackgroundFile {
    buf: Vec<u8>,
    jobs: Option<Sender<Job>>,
    spare: Receiver<Vec<u8>>,
    error: Arc<Mutex<Option<(io::ErrorKind, String)>>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundFile {
    pub fn new(file: File) -> Result<Self> {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(CHUNKS_QUEUED);
        let (give_back, spare) = crossbeam_channel::bounded(CHUNKS_QUEUED);
        let error = Arc::new(Mutex::new(None));
        let failed = error.clone();
        let thread = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || write_jobs(file, &queue, &give_back, &failed))
            .context("starting the output thread")?;
        Ok(BackgroundFile {
            buf: Vec::with_capacity(CHUNK_BYTES),
            jobs: Some(jobs),
            spare,
            error,
            thread: Some(thread),
        })
    }

    /// The first error the writing thread met, if any.
    fn failed(&self) -> io::Result<()> {
        match self.error.lock().ok().and_then(|e| e.clone()) {
            Some((kind, message)) => Err(io::Error::new(kind, message)),
            None => Ok(()),
        }
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the output thread stopped");
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(job).map_err(|_| gone())
    }

    /// Hands the gathered bytes to the writing thread.
    fn hand_over(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.spare.try_recv() {
            Ok(mut spare) => {
                spare.clear();
                spare
            }
            Err(_) => Vec::with_capacity(CHUNK_BYTES),
        };
        let chunk = std::mem::replace(&mut self.buf, next);
        let len = chunk.len();
        self.send(Job::Write(chunk, len))
    }
}

impl PerfettoOut for BackgroundFile {
    const TAKES_BUFFERS: bool = true;

    fn write_buffer(&mut self, buffer: Vec<u8>, len: usize) -> (Vec<u8>, io::Result<()>) {
        // After what was gathered before it.
        let sent = self
            .failed()
            .and_then(|()| self.hand_over())
            .and_then(|()| self.send(Job::Write(buffer, len)));
        // A buffer the thread gave back (its bytes initialized, which the
        // writer overwrites), or a new one.
        (self.spare.try_recv().unwrap_or_default(), sent)
    }

    /// Frees the buffers the thread gave back (`buf` is only written
    /// through `Write`, which a `PerfettoWriter` does not use).
    fn release_spare(&mut self) {
        while self.spare.try_recv().is_ok() {}
    }

    /// Hands what was gathered to the thread and returns: `flush` would
    /// wait for the file.
    fn write_out(&mut self) -> io::Result<()> {
        self.failed()?;
        self.hand_over()
    }
}

/// The writing thread: writes chunks until the queue closes, then gives
/// them back for reuse. After an error it writes nothing more.
fn write_jobs(
    mut file: File,
    queue: &Receiver<Job>,
    give_back: &Sender<Vec<u8>>,
    failed: &Mutex<Option<(io::ErrorKind, String)>>,
) {
    // This thread carries every event to the file, like the merge and the
    // readers, and is raised with them (see `priority`).
    let _follower = crate::priority::Follower::new();
    for job in queue {
        match job {
            Job::Write(chunk, len) => {
                let healthy = failed.lock().is_ok_and(|e| e.is_none());
                if healthy {
                    if let Err(e) = file.write_all(&chunk[..len]) {
                        if let Ok(mut slot) = failed.lock() {
                            *slot = Some((e.kind(), e.to_string()));
                        }
                    }
                }
                // As it is: whoever takes it clears it (`hand_over`) or
                // overwrites it (a `PerfettoWriter`).
                let _ = give_back.try_send(chunk);
            }
            Job::Flush(reply) => {
                let _ = reply.send(file.flush());
            }
        }
    }
}

impl Write for BackgroundFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.failed()?;
        // A chunk that would outgrow its allocation goes first: growing it
        // would copy all of its bytes again (up to 1 MB per 256 KB write).
        if self.buf.len() + bytes.len() > self.buf.capacity() && !self.buf.is_empty() {
            self.hand_over()?;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK_BYTES {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hand_over()?;
        let (reply, done) = crossbeam_channel::bounded(1);
        self.send(Job::Flush(reply))?;
        let flushed = done.recv().unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the output thread stopped",
            ))
        });
        self.failed()?;
        flushed
    }
}

impl Drop for BackgroundFile {
    fn drop(&mut self) {
        let _ = self.hand_over();
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_file_gets_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut expected = Vec::new();
        {
            let mut file = BackgroundFile::new(File::create(&path).unwrap()).unwrap();
            for i in 0..5000u32 {
                let piece: Vec<u8> = (0..(i % 977)).map(|b| (b ^ i) as u8).collect();
                file.write_all(&piece).unwrap();
                expected.extend_from_slice(&piece);
                if i % 1000 == 0 {
                    file.flush().unwrap();
                    assert_eq!(std::fs::read(&path).unwrap(), expected);
                }
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    /// A `PerfettoWriter`'s buffers go to the writing thread as they are,
    /// their first `len` bytes written in order with bytes gathered by
    /// `write`.
    #[test]
    fn whole_buffers_are_handed_over_in_order_with_gathered_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut file = BackgroundFile::new(File::create(&path).unwrap()).unwrap();
        let mut expected = Vec::new();
        file.write_all(b"gathered first, ").unwrap();
        expected.extend_from_slice(b"gathered first, ");
        // Only the first `len` bytes are written; the rest is stale.
        let first = b"a buffer's packets|stale".to_vec();
        let (_, written) = file.write_buffer(first, 18);
        written.unwrap();
        expected.extend_from_slice(b"a buffer's packets");
        file.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        file.write_all(b", gathered again").unwrap();
        expected.extend_from_slice(b", gathered again");
        let (_, written) = file.write_buffer(b", another|stale".to_vec(), 9);
        written.unwrap();
        expected.extend_from_slice(b", another");
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    /// Once the buffers it gave back are released (an idle collector),
    /// none is kept, and buffers handed over later are written as before:
    /// their first `len` bytes, in order.
    #[test]
    fn buffers_after_releasing_spares_are_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut file = BackgroundFile::new(File::create(&path).unwrap()).unwrap();
        let mut expected = Vec::new();
        for round in 0..3 {
            let packets = format!("{round}:packets|");
            let buffer = format!("{packets}stale").into_bytes();
            let (_, written) = file.write_buffer(buffer, packets.len());
            written.unwrap();
            expected.extend_from_slice(packets.as_bytes());
            // The thread gives the buffer back once it is written.
            file.flush().unwrap();
            file.release_spare();
            assert!(file.spare.is_empty(), "round {round}: a buffer was kept");
        }
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
