//! Writing protobuf varints forward into bytes made ready for them, byte
//! by byte: the stream writer's batch frames (`wire::batch`) and the
//! Perfetto encoder's hot packets (`export::perfetto::thread::hot`). Each
//! says how one byte is stored (an exact slice, or a masked window).

/// Bytes written forward, one at a time.
pub(crate) trait PutBytes {
    /// Stores `byte` at the position and moves past it.
    fn byte(&mut self, byte: u8);

    /// Stores `value` as a varint (7 bits a byte, low bits first).
    #[inline(always)]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }
}
