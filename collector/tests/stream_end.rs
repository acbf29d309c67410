//! A recorder that streams to a collector waits, when it stops, until the
//! collector has closed its side of the connection (closing with the
//! collector's answers unread would reset it). The collector closes its
//! sending side as soon as it has read the stream's end marker: not after
//! the stream's last events have gone through the merge, which on a busy
//! machine made a recording's stop wait behind the merge and the file's
//! writer (README, "Until the merged file is complete").

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::wire::{self, pb, Body};
use rtrace::Address;
use rtrace_collect::access::Access;
use rtrace_collect::ingest::{Arrival, Ingest};
use support::stream_start;

#[test]
fn the_collector_closes_its_side_once_it_has_read_the_end_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let _ingest = Ingest::start(&[Address::Unix(path.clone())], Access::default(), tx).unwrap();
    let mut peer = UnixStream::connect(&path).unwrap();
    peer.write_all(&stream_start(None, "ending", 1)).unwrap();
    // This thread plays the merge, and a slow one: after the hello it
    // takes nothing more until the connection has closed.
    match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
        Arrival::Hello { encoder, .. } => encoder.send(None).unwrap(),
        other => panic!("expected the stream's hello, got {other:?}"),
    }
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(wire::read_reply(&mut peer).unwrap().accepted);

    let mut bytes = Vec::new();
    let snapshot = pb::ClockSnapshot {
        ticks: 1_000,
        monotonic_ns: 1_000_000,
        unix_ns: 0,
        complete_ticks: 0,
    };
    wire::encode_frame(Body::Clock(snapshot), &mut bytes);
    let events: Vec<RawEvent> = (0..100)
        .map(|i| {
            let kind = if i % 2 == 0 { Kind::Call } else { Kind::Return };
            RawEvent::new(2_000 + i, FunctionId(0), kind, 0)
        })
        .collect();
    wire::encode_frame(wire::batch_body(1, &events, 0, Vec::new()), &mut bytes);
    let end = pb::End {
        events: 100,
        lost: 0,
        stop_unix_ns: 0,
    };
    wire::encode_frame(Body::End(end), &mut bytes);
    // The end marker, but not our end of the connection: the collector
    // must close its side on the marker alone.
    peer.write_all(&bytes).unwrap();

    let started = Instant::now();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest)
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
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let mut batches = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            Arrival::Chunks { chunks, .. } => batches += chunks.len(),
            Arrival::Closed { end, error, .. } => {
                assert_eq!(error, None);
                assert_eq!(end.events, 100);
                assert!(!end.truncated);
                break;
            }
            other => panic!("expected the stream's chunks and end, got {other:?}"),
        }
    }
    assert!(batches >= 1);
}
