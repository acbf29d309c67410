//! Where the writer's bytes go. A file sink for now; the collector socket
//! sink joins it later.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::wire;
use crate::{Error, Result};

/// A destination for encoded frames.
pub trait Sink: Send {
    /// Writes bytes (whole frames) to the sink.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Pushes buffered bytes to the OS, so a killed process keeps them.
    fn flush(&mut self) -> io::Result<()>;
    /// Names the sink in messages ("/tmp/x.rtrace").
    fn describe(&self) -> String;
}

/// A stream file: the header, then frames.
#[derive(Debug)]
pub struct FileSink {
    out: BufWriter<File>,
    path: PathBuf,
}

impl FileSink {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: &Path) -> Result<FileSink> {
        let open_err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(open_err)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&wire::file_header()).map_err(open_err)?;
        out.flush().map_err(open_err)?;
        Ok(FileSink {
            out,
            path: path.to_owned(),
        })
    }
}

impl Sink for FileSink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
