//! A recorder that streams to a collector waits, when it stops, until the
//! collector has closed its side of the connection (closing with the
//! collector's answers unread would reset it). The collector closes its
//! sending side as soon as it has read the stream's end marker: not after
//! the stream's last events have gone through the merge, which on a busy
//! machine made a recording's stop wait behind the merge and the file's
//! writer (README, "Until the merged file is complete").

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rtrace::wire::{self, pb, Body};
use rtrace_collect::ingest::Arrival;
use support::{batch_frames, IngestPeer};

#[test]
fn the_collector_closes_its_side_once_it_has_read_the_end_marker() {
    // The test's thread plays the merge, and a slow one: after the hello
    // it takes nothing more until the connection has closed.
    let mut stream = IngestPeer::accepted("ending");
    let mut bytes = batch_frames(1, 100);
    let end = pb::End {
        events: 100,
        lost: 0,
        stop_unix_ns: 0,
    };
    wire::encode_frame(Body::End(end), &mut bytes);
    // The end marker, but not our end of the connection: the collector
    // must close its side on the marker alone.
    stream.peer.write_all(&bytes).unwrap();

    let started = Instant::now();
    let mut rest = Vec::new();
    stream
        .peer
        .read_to_end(&mut rest)
        .expect("the collector closes its side after the end marker");
    assert!(
        rest.is_empty(),
        "unexpected bytes from the collector: {rest:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed only after {:?}",
        started.elapsed()
    );

    // What was sent still reaches the merge, then the stream's end.
    stream.peer.shutdown(std::net::Shutdown::Write).unwrap();
    let mut chunks_seen = 0;
    loop {
        match stream.arrival() {
            Arrival::Chunks { chunks, .. } => chunks_seen += chunks.len(),
            Arrival::Closed { end, error, .. } => {
                assert_eq!(error, None);
                assert_eq!(end.events, 100);
                assert!(!end.truncated);
                break;
            }
            other => panic!("expected the stream's chunks and end, got {other:?}"),
        }
    }
    assert!(chunks_seen >= 1);
}
