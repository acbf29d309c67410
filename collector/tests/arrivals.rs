//! What arrived together goes to the merge together: a stream's frames
//! that one read brought in are decoded and handed over in one message,
//! not one message (and one wake-up of the merge thread) per frame. With
//! eight processes tracing flat out, that took about 7 % off the merge
//! thread's CPU (README, "Collector throughput").

mod support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::wire::{self, pb, Body};
use rtrace::{Address, Chunk};
use rtrace_collect::access::Access;
use rtrace_collect::ingest::{Arrival, Ingest};
use support::stream_start;

#[test]
fn frames_that_arrive_together_reach_the_merge_in_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let _ingest = Ingest::start(&[Address::Unix(path.clone())], Access::default(), tx).unwrap();
    let mut peer = UnixStream::connect(&path).unwrap();
    peer.write_all(&stream_start(None, "together", 1)).unwrap();
    // This thread plays the merge.
    let recv = || rx.recv_timeout(Duration::from_secs(30)).unwrap();
    match recv() {
        Arrival::Hello { encoder, .. } => encoder.send(None).unwrap(),
        other => panic!("expected the stream's hello, got {other:?}"),
    }
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(wire::read_reply(&mut peer).unwrap().accepted);

    // A clock snapshot and 20 batches of 100 events (20 KB), in one write.
    const BATCHES: usize = 20;
    let mut bytes = Vec::new();
    let snapshot = pb::ClockSnapshot {
        ticks: 1_000,
        monotonic_ns: 1_000_000,
        unix_ns: 0,
        complete_ticks: 0,
    };
    wire::encode_frame(Body::Clock(snapshot), &mut bytes);
    for batch in 0..BATCHES as u64 {
        let events: Vec<RawEvent> = (0..100)
            .map(|i| {
                let kind = if i % 2 == 0 { Kind::Call } else { Kind::Return };
                RawEvent::new(2_000 + batch * 1_000 + i, FunctionId(0), kind, 0)
            })
            .collect();
        wire::encode_frame(wire::batch_body(1, &events, 0, Vec::new()), &mut bytes);
    }
    peer.write_all(&bytes).unwrap();

    let (mut messages, mut batches) = (0, 0);
    while batches < BATCHES {
        match recv() {
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
