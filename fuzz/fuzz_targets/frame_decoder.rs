//! Any bytes as a stream: the header check, the frame reader and the event
//! reader must return items or a typed error, never panic, never allocate
//! what a length prefix merely announces, and never loop. The same bytes
//! also go to the recorder's decoder of the collector's `HelloReply`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtrace::{EventReader, FrameReader};

fuzz_target!(|input: &[u8]| {
    // A first byte of 0xff puts a valid header before the rest, so that the
    // fuzzer spends its time on frames, not on finding the magic.
    let data: Vec<u8> = match input.split_first() {
        Some((0xff, rest)) => rtrace::wire::file_header()
            .iter()
            .chain(rest)
            .copied()
            .collect(),
        _ => input.to_vec(),
    };
    let data = data.as_slice();
    // As a recorder reads a collector's answer to its hello.
    let _ = rtrace::wire::read_reply(&mut &data[..]);
    // As the collector reads a connection: the small handshake limit first.
    if let Ok(mut frames) = FrameReader::with_header(data, "fuzz".into()) {
        frames.set_max_frame_bytes(1 << 20);
        while let Ok(Some(_)) = frames.next_frame() {}
    }
    // As a whole stream, with clocks resolved.
    let Ok(mut reader) = FrameReader::with_header(data, "fuzz".into()).and_then(EventReader::new)
    else {
        return;
    };
    let mut items = 0usize;
    while let Ok(Some(_)) = reader.next_item() {
        items += 1;
    }
    let _ = (reader.truncated(), reader.lost(), items);
});
