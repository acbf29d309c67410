//! What arrived together goes to the merge together: a stream's frames
//! that one read brought in are decoded and handed over in one message,
//! not one message (and one wake-up of the merge thread) per frame. With
//! eight processes tracing flat out, that took about 7 % off the merge
//! thread's CPU (README, "Collector throughput").

mod support;

use std::io::Write;

use rtrace::Chunk;
use rtrace_collect::ingest::Arrival;
use support::{batch_frames, IngestPeer};

#[test]
fn frames_that_arrive_together_reach_the_merge_in_one_message() {
    let mut stream = IngestPeer::accepted("together");
    // A clock snapshot and 20 batches of 100 events (20 KB), in one write.
    const BATCHES: usize = 20;
    stream
        .peer
        .write_all(&batch_frames(BATCHES as u64, 100))
        .unwrap();

    let (mut messages, mut batches) = (0, 0);
    while batches < BATCHES {
        match stream.arrival() {
            Arrival::Chunks { chunks, .. } => {
                messages += 1;
                batches += chunks
                    .iter()
                    .filter(|c| matches!(c, Chunk::Encoded { .. } | Chunk::Plain { .. }))
                    .count();
            }
            other => panic!("expected the stream's chunks, got {other:?}"),
        }
    }
    // One read brings the 20 KB in whole, as a rule; a read that the
    // kernel split would make two.
    assert!(
        messages <= 2,
        "{BATCHES} batches written at once came in {messages} messages"
    );
}
