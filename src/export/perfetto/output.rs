//! Where packets are written: a `PacketBuf` (the bytes of a batch of
//! events, or of the file), and the writer's `Output`, a `PacketBuf`
//! written out to the file whenever it is full.
//!
//! Packets built with prost are appended; the hot packets (see
//! `thread::hot`) are written in place, byte by byte, into room that the
//! buffer keeps initialized past its end (zeroed, or a reused buffer's old
//! bytes), so writing them needs no copy and no capacity check per byte.

use std::io::{self, Write};

use super::super::perfetto_format::{self as format, pb};

/// Where a `PerfettoWriter` writes its trace: any `Write`, which gets the
/// writer's buffer by `write_all` when it is full, or a writer that takes
/// the buffer itself and hands back another (the collector's file, written
/// by a thread of its own), which saves copying every byte once more.
pub trait PerfettoOut: Write {
    /// True if `write_buffer` takes buffers whole: then every append goes
    /// into the writer's buffer (without it, a long one goes straight to
    /// `write_all`).
    const TAKES_BUFFERS: bool = false;

    /// Writes `buffer[..len]`, and returns a buffer for the writer to fill
    /// next (this one, or another whose bytes are anything): always, with
    /// the error if the write failed.
    fn write_buffer(&mut self, buffer: Vec<u8>, len: usize) -> (Vec<u8>, io::Result<()>) {
        let written = self.write_all(&buffer[..len]);
        (buffer, written)
    }

    /// Frees buffers kept for reuse (see `TimelineSink::release_spare`);
    /// by default there are none.
    fn release_spare(&mut self) {}

    /// Passes what was written on towards the file without waiting for the
    /// file to have it (see `TimelineSink::write_out`). By default `flush`:
    /// a `Write` writes where it is called.
    fn write_out(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl PerfettoOut for Vec<u8> {}
impl PerfettoOut for std::fs::File {}
impl<W: Write> PerfettoOut for io::BufWriter<W> {}
impl<W: PerfettoOut + ?Sized> PerfettoOut for &mut W {
    const TAKES_BUFFERS: bool = W::TAKES_BUFFERS;
    fn write_buffer(&mut self, buffer: Vec<u8>, len: usize) -> (Vec<u8>, io::Result<()>) {
        (**self).write_buffer(buffer, len)
    }
    fn release_spare(&mut self) {
        (**self).release_spare()
    }
    fn write_out(&mut self) -> io::Result<()> {
        (**self).write_out()
    }
}
impl<W: PerfettoOut + ?Sized> PerfettoOut for Box<W> {
    const TAKES_BUFFERS: bool = W::TAKES_BUFFERS;
    fn write_buffer(&mut self, buffer: Vec<u8>, len: usize) -> (Vec<u8>, io::Result<()>) {
        (**self).write_buffer(buffer, len)
    }
    fn release_spare(&mut self) {
        (**self).release_spare()
    }
    fn write_out(&mut self) -> io::Result<()> {
        (**self).write_out()
    }
}

/// Bytes gathered before the output writes them to the file.
const BUFFER_BYTES: usize = 256 << 10;
/// Appends at least this long skip the buffer and go to the file as they
/// are: a whole batch of one thread (~16 K events, ~220 KB) is one copy
/// less, which is most of the merged file when one stream dominates, and
/// all of the reorder window written at the end.
const DIRECT_BYTES: usize = 32 << 10;
/// Room kept past the end for one in-place packet (the largest is ~100
/// bytes).
pub(super) const ROOM: usize = 256;

/// Packets being written: `buf` is allocated and initialized ahead (zeroed,
/// or holding a reused buffer's old bytes), and only its first `filled`
/// bytes are packets.
#[derive(Debug, Default)]
pub(super) struct PacketBuf {
    buf: Vec<u8>,
    filled: usize,
    /// Where prost encodes a packet before it is copied in.
    scratch: Vec<u8>,
}

impl PacketBuf {
    /// A buffer with room for about `bytes` bytes before it grows.
    pub(super) fn with_room(bytes: usize) -> Self {
        PacketBuf {
            buf: vec![0; bytes + ROOM],
            filled: 0,
            scratch: Vec::new(),
        }
    }

    /// A buffer in `bytes`'s allocation (its contents are overwritten),
    /// with room for about `room` bytes before it grows. Only what `room`
    /// needs past `bytes`' length is zeroed (a batch's buffer comes back
    /// holding about 7/8 of what it had room for).
    pub(super) fn reusing(mut bytes: Vec<u8>, room: usize) -> Self {
        let len = (room + ROOM).max(bytes.len());
        bytes.resize(len, 0);
        PacketBuf {
            buf: bytes,
            filled: 0,
            scratch: Vec::new(),
        }
    }

    /// Bytes of packets so far.
    pub(super) fn len(&self) -> usize {
        self.filled
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// The buffer and how many of its bytes are packets; an empty buffer
    /// is left in its place.
    fn take(&mut self) -> (Vec<u8>, usize) {
        let filled = std::mem::take(&mut self.filled);
        (std::mem::take(&mut self.buf), filled)
    }

    /// The packets, as a vector of their bytes.
    pub(super) fn into_bytes(mut self) -> Vec<u8> {
        self.buf.truncate(self.filled);
        self.buf
    }

    /// Room for one in-place packet (`ROOM` bytes); write it at the start
    /// and `advance` by its length.
    #[inline]
    pub(super) fn room(&mut self) -> &mut [u8] {
        if self.buf.len() < self.filled + ROOM {
            self.grow(ROOM);
        }
        &mut self.buf[self.filled..self.filled + ROOM]
    }

    /// Keeps `n` bytes written into `room`.
    #[inline]
    pub(super) fn advance(&mut self, n: usize) {
        self.filled += n;
    }

    #[cold]
    fn grow(&mut self, at_least: usize) {
        let len = (self.filled + at_least + ROOM).max(self.buf.len() * 2);
        self.buf.resize(len, 0);
    }

    /// Appends bytes.
    #[inline]
    pub(super) fn append(&mut self, bytes: &[u8]) {
        if self.buf.len() < self.filled + bytes.len() + ROOM {
            self.grow(bytes.len());
        }
        copy(&mut self.buf[self.filled..], bytes);
        self.filled += bytes.len();
    }

    /// Appends a packet built with prost.
    pub(super) fn packet(&mut self, packet: &pb::TracePacket) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        format::append_packet(packet, &mut scratch);
        self.append(&scratch);
        self.scratch = scratch;
    }
}

/// Copies `src` to the start of `dst`. The merge appends a run of a few
/// events' bytes at a time, often two dozen: `copy_from_slice` of such a
/// size is a call to memmove (with its size dispatch), while two fixed-size
/// copies that overlap in the middle are a few vector moves.
#[inline]
fn copy(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    match n {
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..n].copy_from_slice(&src[n - 8..]);
        }
        17..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..n].copy_from_slice(&src[n - 16..]);
        }
        33..=64 => {
            dst[..32].copy_from_slice(&src[..32]);
            dst[n - 32..n].copy_from_slice(&src[n - 32..]);
        }
        _ => dst[..n].copy_from_slice(src),
    }
}

/// The file being written, with its buffer.
pub(super) struct Output<W> {
    out: W,
    pub(super) buf: PacketBuf,
    /// Bytes handed to `out` so far.
    bytes: u64,
}

impl<W: PerfettoOut> Output<W> {
    pub(super) fn new(out: W) -> Self {
        Output {
            out,
            buf: PacketBuf::with_room(BUFFER_BYTES),
            bytes: 0,
        }
    }

    /// Bytes of trace produced so far (written or still buffered).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes + self.buf.len() as u64
    }

    pub(super) fn into_inner(self) -> W {
        self.out
    }

    /// Appends a packet built with prost.
    pub(super) fn packet(&mut self, packet: &pb::TracePacket) -> io::Result<()> {
        self.buf.packet(packet);
        self.written()
    }

    /// Appends bytes of packets.
    #[inline]
    pub(super) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() >= DIRECT_BYTES && !W::TAKES_BUFFERS {
            self.write_buffer()?;
            self.bytes += bytes.len() as u64;
            return self.out.write_all(bytes);
        }
        self.buf.append(bytes);
        self.written()
    }

    /// Writes the buffer out once it is full (after packets were added).
    #[inline]
    pub(super) fn written(&mut self) -> io::Result<()> {
        if self.buf.len() >= BUFFER_BYTES {
            self.write_buffer()?;
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        if self.buf.len() == 0 {
            return Ok(());
        }
        let (buffer, len) = self.buf.take();
        let (next, written) = self.out.write_buffer(buffer, len);
        if written.is_ok() {
            self.bytes += len as u64;
        }
        // Whatever came back: its bytes are initialized, and only what
        // lies past them is zeroed.
        self.buf = PacketBuf::reusing(next, BUFFER_BYTES);
        written
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.write_buffer()?;
        self.out.flush()
    }

    /// Hands the buffer, however full, on towards the file, without
    /// waiting for the file to have it (`TimelineSink::write_out`).
    pub(super) fn write_out(&mut self) -> io::Result<()> {
        self.write_buffer()?;
        self.out.write_out()
    }

    /// Frees the output's spare buffers (not the buffer being filled: an
    /// idle collector's holds the packets after its streams' last events).
    pub(super) fn release_spare(&mut self) {
        self.out.release_spare();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_every_small_size_are_exact() {
        let src: Vec<u8> = (1..=200).collect();
        for n in 0..=130 {
            let mut dst = vec![0u8; 256];
            copy(&mut dst, &src[..n]);
            assert_eq!(&dst[..n], &src[..n], "{n} bytes");
            assert!(
                dst[n..].iter().all(|&b| b == 0),
                "{n} bytes: wrote past the end"
            );
        }
    }

    /// Small appends are buffered and large ones go straight out: the
    /// file gets every byte in order either way.
    #[test]
    fn the_output_keeps_appends_of_every_size_in_order() {
        let mut output = Output::new(Vec::new());
        let mut expected = Vec::new();
        for i in 0..300usize {
            let len = [3, 500, DIRECT_BYTES - 1, DIRECT_BYTES, 3 * BUFFER_BYTES][i % 5];
            let bytes: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            output.append(&bytes).unwrap();
            expected.extend_from_slice(&bytes);
            assert_eq!(output.bytes(), expected.len() as u64);
        }
        output.flush().unwrap();
        assert_eq!(output.into_inner(), expected);
    }

    #[test]
    fn room_and_appends_keep_the_bytes_in_order() {
        let mut buf = PacketBuf::default();
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            let byte = (i % 251) as u8;
            if i % 3 == 0 {
                buf.append(&[byte, byte]);
                expected.extend_from_slice(&[byte, byte]);
            } else {
                let room = buf.room();
                assert_eq!(room.len(), ROOM);
                room[0] = byte;
                buf.advance(1);
                expected.push(byte);
            }
        }
        assert_eq!(buf.bytes(), expected.as_slice());
        assert_eq!(buf.into_bytes(), expected);
    }
}
