//! The Perfetto writer's `StreamEncoder`: a stream's `StreamCoder`, run on
//! the stream's reader thread ahead of the merge.

use crate::read::{Encoded, Event};
use crate::timeline::StreamEncoder;
use crate::writer::FunctionInfo;

use super::super::perfetto_format::pb;
use super::output::PacketBuf;
use super::stream::StreamCoder;

/// Encodes one stream's events for a `PerfettoWriter`.
pub(super) struct Encoder {
    coder: StreamCoder,
    /// Descriptors of renamed threads, written before the next events.
    renamed: Vec<pb::TracePacket>,
}

impl Encoder {
    pub(super) fn new(coder: StreamCoder) -> Self {
        Encoder {
            coder,
            renamed: Vec::new(),
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
        // Calls and returns take ~14 bytes each.
        let mut buf = PacketBuf::with_room(events.len() * 16);
        buf.append(&out.bytes);
        for packet in self.renamed.drain(..) {
            buf.packet(&packet);
        }
        out.ends.reserve_exact(events.len());
        self.coder.events(events, &mut buf, &mut out.ends);
        out.bytes = buf.into_bytes();
        out.ts_ns.extend(events.iter().map(|e| e.ts_ns));
    }
}
