//! The writer's output buffer. Packets built with prost are appended to
//! it; the hot packets (see `thread::hot`) are written in place, byte by
//! byte, into room that is always there: the buffer is allocated (and
//! zeroed) once, and only the bytes up to `filled` mean anything.

use std::io::{self, Write};

use super::super::perfetto_format::{self as format, pb};

/// Bytes gathered before they are written to the output.
const BUFFER_BYTES: usize = 256 << 10;
/// Room kept past `BUFFER_BYTES` for in-place packets.
pub(super) const ROOM: usize = 256;

/// The output with its buffer.
pub(super) struct Output<W> {
    out: W,
    /// `BUFFER_BYTES + ROOM` bytes, of which `filled` are the trace's.
    buf: Vec<u8>,
    filled: usize,
    /// Where prost encodes a packet before it is copied in.
    scratch: Vec<u8>,
    /// Bytes handed to `out` so far.
    bytes: u64,
}

impl<W: Write> Output<W> {
    pub(super) fn new(out: W) -> Self {
        Output {
            out,
            buf: vec![0; BUFFER_BYTES + ROOM],
            filled: 0,
            scratch: Vec::new(),
            bytes: 0,
        }
    }

    /// Bytes of trace produced so far (written or still buffered).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes + self.filled as u64
    }

    pub(super) fn into_inner(self) -> W {
        self.out
    }

    /// Appends a packet built with prost.
    pub(super) fn packet(&mut self, packet: &pb::TracePacket) -> io::Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        format::append_packet(packet, &mut scratch);
        let result = self.append(&scratch);
        self.scratch = scratch;
        result
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.filled + bytes.len() > BUFFER_BYTES {
            self.write_buffer()?;
        }
        if bytes.len() > BUFFER_BYTES {
            self.bytes += bytes.len() as u64;
            return self.out.write_all(bytes);
        }
        self.buf[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
        Ok(())
    }

    /// Room for one in-place packet (`ROOM` bytes), or `None` when the
    /// buffer is full and must be written out first (`written`).
    #[inline]
    pub(super) fn room(&mut self) -> Option<&mut [u8]> {
        if self.filled >= BUFFER_BYTES {
            return None;
        }
        Some(&mut self.buf[self.filled..self.filled + ROOM])
    }

    /// Keeps `n` bytes written into `room`.
    #[inline]
    pub(super) fn advance(&mut self, n: usize) {
        self.filled += n;
    }

    /// Writes the buffer out once it is full (after packets were added).
    #[inline]
    pub(super) fn written(&mut self) -> io::Result<()> {
        if self.filled >= BUFFER_BYTES {
            self.write_buffer()?;
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf[..self.filled])?;
        self.bytes += self.filled as u64;
        self.filled = 0;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.write_buffer()?;
        self.out.flush()
    }
}
