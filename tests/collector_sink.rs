//! Streaming to a collector socket: delivery, and spilling while the
//! collector is unreachable.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;

use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::{clock, Address, Config, EventReader, FrameReader, OnFull, Recorder};

fn record(config: Config, calls: u64) -> rtrace::Stats {
    let recorder = Recorder::start(config).unwrap();
    let mut buf = recorder.new_thread_buffer(1);
    recorder.name_thread(1, "main".into());
    for _ in 0..calls {
        for kind in [Kind::Call, Kind::Return] {
            if buf.push(RawEvent::new(clock::ticks(), FunctionId(0), kind, 0)) {
                recorder.hand_over(&mut buf);
            }
        }
    }
    recorder.hand_over(&mut buf);
    recorder.finish()
}

fn count<R: Read>(mut reader: EventReader<R>) -> (usize, bool, Option<String>) {
    let mut n = 0;
    while reader.next_event().unwrap().is_some() {
        n += 1;
    }
    let name = reader.thread_name(1).map(str::to_owned);
    (n, reader.truncated(), name)
}

/// The collector's reply that lets a recorder stream on.
fn accepted() -> Vec<u8> {
    rtrace::wire::reply_bytes(&rtrace::wire::pb::HelloReply {
        accepted: true,
        protocol_version: 1,
        ..Default::default()
    })
}

fn config(dir: &Path, address: Address) -> Config {
    let mut config = Config::new("sock", dir.join("spill.rtrace"));
    config.collector = Some(address);
    config.on_full = OnFull::Block;
    config
}

#[test]
fn a_listening_collector_receives_a_complete_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut answer = conn.try_clone().unwrap();
        let frames = FrameReader::with_header(conn, "test".into()).unwrap();
        let reader = EventReader::new(frames).unwrap();
        answer.write_all(&accepted()).unwrap();
        count(reader)
    });
    let stats = record(config(dir.path(), Address::Unix(path)), 20_000);
    let (events, truncated, thread) = server.join().unwrap();
    assert_eq!(events as u64, stats.events);
    assert_eq!(events, 40_000);
    assert!(!truncated);
    assert_eq!(thread.as_deref(), Some("main"));
    assert!(!dir.path().join("spill.rtrace").exists());
}

#[test]
fn an_unreachable_collector_makes_the_stream_spill_to_a_complete_file() {
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("nobody.sock"));
    let stats = record(config(dir.path(), address), 5_000);
    assert_eq!(stats.lost, 0);
    let (events, truncated, thread) =
        count(EventReader::open(&dir.path().join("spill.rtrace")).unwrap());
    assert_eq!(events, 10_000);
    assert!(!truncated);
    assert_eq!(thread.as_deref(), Some("main"));
}

#[test]
fn addresses_are_parsed_or_explained() {
    assert_eq!(
        "unix:///tmp/x.sock".parse::<Address>().unwrap(),
        Address::Unix("/tmp/x.sock".into())
    );
    assert_eq!(
        "tcp://127.0.0.1:9".parse::<Address>().unwrap(),
        Address::Tcp("127.0.0.1:9".into())
    );
    for bad in ["/tmp/x.sock", "tcp://nohost", "unix://", "http://x:1"] {
        let err = bad.parse::<Address>().unwrap_err().to_string();
        assert!(
            err.contains("unix://") || err.contains("tcp://"),
            "{bad}: {err}"
        );
    }
    // A port that is not one says which part is wrong.
    for (bad, why) in [
        (
            "tcp://127.0.0.1:99999",
            "port \"99999\" is out of range (ports go up to 65535)",
        ),
        ("tcp://127.0.0.1:http", "port \"http\" is not a port number"),
        ("tcp://127.0.0.1:", "port \"\" is not a port number"),
    ] {
        let err = bad.parse::<Address>().unwrap_err().to_string();
        assert!(
            err.contains(why) && err.contains("tcp://127.0.0.1:9876"),
            "{bad}: {err}"
        );
    }
}

/// Counts the items of a stream a fake collector receives: (pings, clock
/// samples, events, samples that came before the first event).
fn clock_items<R: Read>(
    mut reader: EventReader<R>,
    mut on_ping: impl FnMut(u64, u64),
) -> [usize; 4] {
    let mut counts = [0; 4];
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            rtrace::StreamItem::Ping { id, sent_ns } => {
                counts[0] += 1;
                on_ping(id, sent_ns);
            }
            rtrace::StreamItem::Sync(_) => {
                counts[1] += 1;
                if counts[2] == 0 {
                    counts[3] += 1;
                }
            }
            rtrace::StreamItem::Event(_) => counts[2] += 1,
            _ => {}
        }
    }
    counts
}

#[test]
fn a_collector_that_never_greets_is_never_pinged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut answer = conn.try_clone().unwrap();
        let frames = FrameReader::with_header(conn, "old".into()).unwrap();
        let reader = EventReader::new(frames).unwrap();
        answer.write_all(&accepted()).unwrap();
        clock_items(reader, |_, _| {})
    });
    let stats = record(config(dir.path(), Address::Unix(path)), 1_000);
    let [pings, samples, events, _] = server.join().unwrap();
    assert_eq!((pings, samples), (0, 0));
    assert_eq!(events as u64, stats.events);
}

#[test]
fn a_greeting_collector_gets_a_burst_of_exchanges_before_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reply = conn.try_clone().unwrap();
        let frames = FrameReader::with_header(conn, "new".into()).unwrap();
        let reader = EventReader::new(frames).unwrap();
        // The hello's reply first, then the greeting (as the collector).
        reply.write_all(&accepted()).unwrap();
        reply
            .write_all(&rtrace::clocksync::collector_hello())
            .unwrap();
        clock_items(reader, |id, sent_ns| {
            let received = clock::monotonic_ns();
            let pong = rtrace::clocksync::pong_frame(id, sent_ns, received);
            reply.write_all(&pong).unwrap();
        })
    });
    let stats = record(config(dir.path(), Address::Unix(path)), 1_000);
    let [pings, samples, events, before_first_event] = server.join().unwrap();
    assert_eq!(events as u64, stats.events);
    let burst = rtrace::clocksync::SyncConfig::default().burst as usize;
    assert_eq!(before_first_event, burst, "the burst");
    assert_eq!(pings, samples, "every ping answered and reported");
}

#[test]
fn a_short_stream_waits_for_a_late_greeting_and_syncs_before_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reply = conn.try_clone().unwrap();
        let frames = FrameReader::with_header(conn, "slow".into()).unwrap();
        let reader = EventReader::new(frames).unwrap();
        reply.write_all(&accepted()).unwrap();
        // A busy collector: the greeting comes well after the reply.
        std::thread::sleep(std::time::Duration::from_millis(120));
        reply
            .write_all(&rtrace::clocksync::collector_hello())
            .unwrap();
        clock_items(reader, |id, sent_ns| {
            let pong = rtrace::clocksync::pong_frame(id, sent_ns, clock::monotonic_ns());
            reply.write_all(&pong).unwrap();
        })
    });
    let stats = record(config(dir.path(), Address::Unix(path)), 10);
    let [_, samples, events, _] = server.join().unwrap();
    assert_eq!(events as u64, stats.events);
    assert!(samples > 0, "no clock sample before the end");
}

#[test]
fn a_huge_argv_is_cut_so_the_hello_fits_a_collectors_handshake_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.rtrace");
    let mut config = Config::new("big", &path);
    config.argv = vec!["x".repeat(100_000); 40];
    record(config, 1);
    let reader = EventReader::open(&path).unwrap();
    let argv = &reader.hello().unwrap().argv;
    assert_eq!(argv.last().map(String::as_str), Some("…"));
    let bytes: usize = argv.iter().map(String::len).sum();
    assert!(bytes <= 256 << 10, "{bytes}");
}
