//! The collector answers a recorder's hello only once the merge has
//! registered its stream. A recorder stamps its first event after reading
//! that answer, so the live merge need not hold events back for processes
//! that have not connected yet (`Merger::advance`): this order is what
//! keeps a process that connects while others stream from coming in late.

mod support;

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rtrace::{wire, Address};
use rtrace_collect::access::Access;
use rtrace_collect::ingest::{Arrival, Ingest};
use support::stream_start;

#[test]
fn the_hello_is_answered_only_after_the_merge_registered_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let (tx, rx) = crossbeam_channel::bounded(16);
    let _ingest = Ingest::start(&[Address::Unix(path.clone())], Access::default(), tx).unwrap();

    let mut peer = UnixStream::connect(&path).unwrap();
    std::io::Write::write_all(&mut peer, &stream_start(None, "late", 1)).unwrap();

    // This thread plays the merge: the stream arrives, and is not
    // registered until the encoder is answered.
    let encoder = match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
        Arrival::Hello { encoder, .. } => encoder,
        other => panic!("expected the stream's hello, got {other:?}"),
    };
    std::thread::sleep(Duration::from_millis(200));
    peer.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let early = peer.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the recorder was answered before its stream was registered: {early:?}"
    );

    encoder.send(None).unwrap();
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let reply = wire::read_reply(&mut peer).unwrap();
    assert!(reply.accepted, "{reply:?}");
}
