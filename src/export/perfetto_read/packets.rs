//! Splits a file into `TracePacket`s (`Trace.packet` fields), with a size
//! limit per packet, and stops quietly at a torn last packet.

use std::io::{self, BufRead};

use prost::Message;

use crate::{wire, Error, Result};

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

impl<R: BufRead> PacketReader<R> {
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
        if let Some(buffered) = self.next_buffered(packet, start) {
            return buffered;
        }
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
        let decoded = decode(packet, &self.buf);
        self.decoded(decoded, start)
    }

    /// The next packet decoded straight from the input's buffer, when its
    /// tag, length and bytes are all there (almost always: a packet is a
    /// dozen bytes, the buffer kilobytes), as `next_packet` returns it;
    /// `None` otherwise, and nothing was read: `next_packet` reads it
    /// piece by piece (and tells a bad tag, length or read apart).
    fn next_buffered(
        &mut self,
        packet: &mut pb::TracePacket,
        start: u64,
    ) -> Option<Result<Option<u64>>> {
        let buffered = self.inner.fill_buf().ok()?;
        let (&tag, rest) = buffered.split_first()?;
        let (len, len_bytes) = wire::batch::varint(rest)?;
        if tag != format::PACKET_TAG || len > format::MAX_PACKET_BYTES {
            return None;
        }
        let used = 1 + len_bytes + len as usize;
        let decoded = decode(packet, buffered.get(1 + len_bytes..used)?);
        self.inner.consume(used);
        self.offset += used as u64;
        Some(self.decoded(decoded, start))
    }

    /// What decoding the packet at `start` came to, as `next_packet`
    /// returns it: an undecodable packet ends the reading.
    #[inline]
    fn decoded(
        &mut self,
        decoded: Result<(), prost::DecodeError>,
        start: u64,
    ) -> Result<Option<u64>> {
        match decoded {
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

/// Decodes `bytes` into `packet`, whatever it held before.
#[inline]
fn decode(
    packet: &mut pb::TracePacket,
    bytes: &[u8],
) -> std::result::Result<(), prost::DecodeError> {
    packet.clear();
    packet.merge(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    /// Packets 0..n, each with its number as timestamp (the longer ones
    /// have a name, so sizes vary), as `Trace.packet` fields.
    fn packets(n: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..n {
            let packet = pb::TracePacket {
                timestamp: Some(i),
                trusted_packet_sequence_id: Some(1),
                data: (i % 3 == 0).then(|| {
                    pb::trace_packet::Data::TrackEvent(pb::TrackEvent {
                        name_field: Some(pb::track_event::NameField::Name("x".repeat(i as usize))),
                        ..Default::default()
                    })
                }),
                ..Default::default()
            };
            format::append_packet(&packet, &mut bytes);
        }
        bytes
    }

    /// The timestamps read, whether the input ended torn, and the error.
    fn read_all(bytes: &[u8], capacity: usize) -> (Vec<u64>, bool, Option<String>) {
        let mut reader = PacketReader::new(BufReader::with_capacity(capacity, bytes), "t".into());
        let (mut times, mut packet) = (Vec::new(), pb::TracePacket::default());
        loop {
            match reader.next_packet(&mut packet) {
                Ok(Some(_)) => times.push(packet.timestamp.unwrap()),
                Ok(None) => return (times, reader.truncated, None),
                Err(error) => return (times, reader.truncated, Some(error.to_string())),
            }
        }
    }

    /// Packets whole in the input's buffer are decoded from it; those
    /// across its end, byte by byte: the same packets, torn ends and
    /// errors either way, whatever the buffer's size.
    #[test]
    fn packets_read_alike_whatever_the_buffer_holds() {
        let whole = packets(300);
        let expected: Vec<u64> = (0..300).collect();
        let mut bad_tag = whole.clone();
        let at = packets(150).len();
        bad_tag[at] = 0x12;
        for capacity in [1, 2, 7, 64, 8192, 1 << 20] {
            assert_eq!(read_all(&whole, capacity), (expected.clone(), false, None));
            let torn = read_all(&whole[..whole.len() - 2], capacity);
            assert_eq!(torn, (expected[..299].to_vec(), true, None), "{capacity}");
            let (times, _, error) = read_all(&bad_tag, capacity);
            assert_eq!(times, expected[..150], "{capacity}");
            let error = error.expect("a bad tag is an error");
            assert!(
                error.contains(&format!("at byte {at}: expected a packet")),
                "{error}"
            );
        }
    }
}
