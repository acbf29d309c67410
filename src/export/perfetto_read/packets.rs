//! Splits a file into `TracePacket`s (`Trace.packet` fields), with a size
//! limit per packet, and stops quietly at a torn last packet.

use std::io::{self, Read};

use prost::Message;

use crate::{Error, Result};

use super::super::perfetto_format::{self as format, pb};

/// Reads the packets of a file.
pub(super) struct PacketReader<R> {
    inner: R,
    what: String,
    offset: u64,
    pub truncated: bool,
    done: bool,
    buf: Vec<u8>,
}

impl<R: Read> PacketReader<R> {
    /// Reads packets from `inner`; `what` names it in errors.
    pub(super) fn new(inner: R, what: String) -> Self {
        PacketReader {
            inner,
            what,
            offset: 0,
            truncated: false,
            done: false,
            buf: Vec::new(),
        }
    }

    /// Bytes of the input read so far.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Decodes the next packet into `packet` (whatever it held before) and
    /// returns its byte offset, or `None` at the end (or at a torn last
    /// packet).
    pub(super) fn next_packet(&mut self, packet: &mut pb::TracePacket) -> Result<Option<u64>> {
        if self.done {
            return Ok(None);
        }
        let start = self.offset;
        let mut tag = [0u8; 1];
        if self.read(&mut tag)? == 0 {
            self.done = true;
            return Ok(None);
        }
        if tag[0] != format::PACKET_TAG {
            self.done = true;
            let reason = format!("expected a packet (byte 0x0a), found 0x{:02x}", tag[0]);
            return Err(self.malformed(start, reason));
        }
        let Some(len) = self.read_length()? else {
            return Ok(None);
        };
        if len > format::MAX_PACKET_BYTES {
            self.done = true;
            let reason = format!("a packet of {len} bytes is over the limit");
            return Err(self.malformed(start, reason));
        }
        self.buf.resize(len as usize, 0);
        let mut buf = std::mem::take(&mut self.buf);
        let got = self.read(&mut buf);
        self.buf = buf;
        if got? < self.buf.len() {
            self.end_truncated();
            return Ok(None);
        }
        packet.clear();
        match packet.merge(self.buf.as_slice()) {
            Ok(()) => Ok(Some(start)),
            Err(e) => {
                self.done = true;
                Err(self.malformed(start, format!("undecodable packet: {e}")))
            }
        }
    }

    /// A varint length; `None` at a torn one.
    fn read_length(&mut self) -> Result<Option<u64>> {
        let mut value = 0u64;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            if self.read(&mut byte)? == 0 {
                self.end_truncated();
                return Ok(None);
            }
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                return Ok(Some(value));
            }
        }
        self.done = true;
        let reason = "a packet length is not a valid varint".to_owned();
        Err(self.malformed(self.offset, reason))
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "reading a merged trace",
                        error: source,
                    })
                }
            }
        }
        self.offset += filled as u64;
        Ok(filled)
    }

    fn end_truncated(&mut self) {
        self.truncated = true;
        self.done = true;
    }

    pub(super) fn malformed(&self, offset: u64, reason: String) -> Error {
        Error::Malformed {
            what: self.what.clone(),
            offset,
            reason,
        }
    }
}
