//! The Perfetto writer's `StreamEncoder`: a stream's `StreamCoder`, run on
//! the stream's reader thread ahead of the merge.

use crossbeam_channel::{Receiver, Sender};

use crate::read::{Encoded, Event, Plain};
use crate::timeline::StreamEncoder;
use crate::writer::FunctionInfo;

use super::super::perfetto_format::pb;
use super::output::PacketBuf;
use super::stream::StreamCoder;

/// Output buffers of batches the merge has written, on their way back to
/// the encoders (which run on the streams' reader threads). A new buffer
/// is allocated and zeroed ahead (the hot packets are written in place,
/// see `output`): 16 bytes an event, about 3 % of a live collector's CPU,
/// which a returned one, already initialized, saves.
#[derive(Clone)]
pub(super) struct SpareBuffers {
    give: Sender<Vec<u8>>,
    take: Receiver<Vec<u8>>,
}

/// Buffers kept at most (a batch's is up to ~16 B × its events, a few
/// hundred KB); more are freed. Batches come back as fast as they go out,
/// so a few suffice however many streams share them.
const SPARE_BUFFERS: usize = 16;

impl SpareBuffers {
    pub(super) fn new() -> Self {
        let (give, take) = crossbeam_channel::bounded(SPARE_BUFFERS);
        SpareBuffers { give, take }
    }

    /// Keeps `bytes` for a later batch (or frees it, if enough are kept).
    pub(super) fn give_back(&self, bytes: Vec<u8>) {
        if bytes.capacity() > 0 {
            let _ = self.give.try_send(bytes);
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.take.try_recv().ok()
    }

    /// Frees the buffers kept.
    pub(super) fn release(&self) {
        while self.take.try_recv().is_ok() {}
    }
}

/// Encodes one stream's events for a `PerfettoWriter`.
pub(super) struct Encoder {
    coder: StreamCoder,
    /// Descriptors of renamed threads, written before the next events.
    renamed: Vec<pb::TracePacket>,
    spare: SpareBuffers,
}

impl Encoder {
    pub(super) fn new(coder: StreamCoder, spare: SpareBuffers) -> Self {
        Encoder {
            coder,
            renamed: Vec::new(),
            spare,
        }
    }
}

impl StreamEncoder for Encoder {
    fn function(&mut self, function: &FunctionInfo) {
        self.coder.function(function);
    }

    fn thread(&mut self, tid: u64, name: &str) {
        self.renamed.extend(self.coder.thread(tid, name));
    }

    fn encode(&mut self, events: &[Event], out: &mut Encoded) {
        if events.is_empty() {
            return;
        }
        let mut buf = self.start(events.len(), out);
        self.coder.events(events, &mut buf, &mut out.ends);
        out.bytes = buf.into_bytes();
        out.ts_ns.extend(events.iter().map(|e| e.ts_ns));
    }

    fn encode_plain(&mut self, tid: u64, plain: Plain, out: &mut Encoded) {
        if plain.is_empty() {
            return;
        }
        let mut buf = self.start(plain.len(), out);
        self.coder.plain(tid, &plain, &mut buf, &mut out.ends);
        out.bytes = buf.into_bytes();
        if out.ts_ns.is_empty() {
            // The timestamps the merge orders by are the columns' own.
            out.ts_ns = plain.into_ts_ns();
        } else {
            out.ts_ns.extend_from_slice(plain.ts_ns());
        }
    }
}

impl Encoder {
    /// A buffer for `n` more events' packets after `out`'s bytes, with the
    /// descriptors of renamed threads first.
    fn start(&mut self, n: usize, out: &mut Encoded) -> PacketBuf {
        // Calls and returns take ~14 bytes each.
        let mut buf = match self.spare.take() {
            Some(bytes) => PacketBuf::reusing(bytes, n * 16),
            None => PacketBuf::with_room(n * 16),
        };
        buf.append(&out.bytes);
        for packet in self.renamed.drain(..) {
            buf.packet(&packet);
        }
        out.ends.reserve_exact(n);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FunctionId, Kind};
    use crate::export::perfetto::stream::{Sequences, StreamCoder};
    use crate::export::perfetto::testing::function;

    fn encoder() -> Encoder {
        let mut encoder = Encoder::new(
            StreamCoder::new(77, 5, 1, Sequences::new()),
            SpareBuffers::new(),
        );
        encoder.function(&function(1, "a.py"));
        encoder.function(&function(2, ""));
        encoder.thread(9, "main");
        encoder
    }

    /// Columns encode to exactly the bytes, ends and times of the same
    /// events as `Event`s, on the hot path and off it: a thread's first
    /// event, a function never described, an end that is not of the
    /// innermost slice, an exception, a thread renamed between batches.
    #[test]
    fn plain_columns_encode_as_their_events_do() {
        let codes = [
            (1, Kind::Call),
            (2, Kind::CCall),
            (2, Kind::CReturn),
            (40, Kind::Call),
            (1, Kind::Call),
            (1, Kind::Exception),
            (40, Kind::Return),
            (1, Kind::Return),
        ];
        let plain = |from: u64| {
            let mut plain = Plain::default();
            for (i, &(function, kind)) in codes.iter().enumerate() {
                plain.push(from + i as u64 * 1_000, FunctionId(function), kind);
            }
            plain
        };
        let (mut by_events, mut by_columns) = (encoder(), encoder());
        for (batch, from) in [(0, 10_000), (1, 50_000)] {
            if batch == 1 {
                by_events.thread(9, "renamed");
                by_columns.thread(9, "renamed");
            }
            let mut expected = Encoded::default();
            by_events.encode(&plain(from).into_events(9), &mut expected);
            let mut got = Encoded::default();
            by_columns.encode_plain(9, plain(from), &mut got);
            assert_eq!(got, expected, "batch {batch}");
            assert_eq!(got.ends.len(), codes.len());
            assert_eq!(got.ts_ns, plain(from).ts_ns());
        }
    }
}
