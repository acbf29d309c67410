//! Opens the output file in the format its name asks for: Chrome trace
//! JSON for `.json`, a Perfetto trace otherwise.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use rtrace::export::chrome::ChromeJsonWriter;
use rtrace::export::perfetto::PerfettoWriter;
use rtrace::timeline::TimelineSink;

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

/// Creates `path` and a timeline writer on it.
pub fn create(path: &Path) -> Result<Box<dyn TimelineSink + Send>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let out = BufWriter::with_capacity(1 << 20, file);
    Ok(match Format::for_path(path) {
        Format::Perfetto => Box::new(PerfettoWriter::new(out)),
        Format::ChromeJson => Box::new(ChromeJsonWriter::new(out)),
    })
}
