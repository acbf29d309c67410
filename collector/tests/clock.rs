//! Clocks at the collector: a stream whose CLOCK_MONOTONIC jumps back is
//! flagged in the stats and the timeline, offline and live, with every
//! event kept in its thread's order; the live collector greets recorders
//! that take part in the clock exchange (only those), answers their pings,
//! and applies the offset the samples show; a real recorder of this host
//! is recognised as such.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rtrace::clock::JumpKind;
use rtrace::event::{FunctionId, Kind, RawEvent};
use rtrace::export::perfetto::PerfettoOut;
use rtrace::export::PerfettoWriter;
use rtrace::merge::{MergeConfig, StreamStats};
use rtrace::timeline::ClockStatus;
use rtrace::wire::{self, pb, Body};
use rtrace::{clock, Address, Config, Recorder};
use rtrace_collect::access::Access;
use rtrace_collect::live::{self, LiveOptions};
use rtrace_collect::stop::Stop;
use rtrace_collect::{offline, report};

const EVENTS_PER_BATCH: u64 = 100;

/// A stream written by hand: two threads, a clock that reads 4 s earlier
/// half way through (the counter goes on as before).
struct Crafted {
    base_ns: u64,
}

impl Crafted {
    fn hello(&self, clock_sync: bool) -> Vec<u8> {
        let mut out = wire::file_header().to_vec();
        let hello = pb::Hello {
            protocol_version: 1,
            session: "jumpy".into(),
            pid: 4242,
            host: "elsewhere".into(),
            boot_id: "another-boot".into(),
            clock: Some(pb::ClockInfo {
                source: pb::clock_info::Source::Monotonic as i32,
                ticks_per_second: 1e9,
            }),
            clock_sync,
            ..pb::Hello::default()
        };
        wire::encode_frame(Body::Hello(hello), &mut out);
        let function = pb::Function {
            id: 0,
            name: "work".into(),
            ..pb::Function::default()
        };
        wire::encode_frame(Body::Function(function), &mut out);
        out
    }

    /// Snapshots and batches; ticks count ns from `base_ns`, and the clock
    /// reads 4 s less after the second snapshot.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let b = self.base_ns;
        let segments = [
            (b, b),
            (b + 10_000_000, b + 10_000_000),
            (b + 20_000_000, b + 20_000_000 - 4_000_000_000),
        ];
        for &(ticks, mono) in &segments {
            let snapshot = pb::ClockSnapshot {
                ticks: ticks + 5_000_000,
                monotonic_ns: mono + 5_000_000,
                unix_ns: 0,
                complete_ticks: 0,
            };
            wire::encode_frame(Body::Clock(snapshot), &mut out);
            for tid in [1, 2] {
                let events: Vec<RawEvent> = (0..EVENTS_PER_BATCH)
                    .map(|k| {
                        let kind = if k % 2 == 0 { Kind::Call } else { Kind::Return };
                        RawEvent::new(ticks + k * 1000 + tid, FunctionId(0), kind, 0)
                    })
                    .collect();
                wire::encode_frame(wire::batch_body(tid, &events, 0, Vec::new()), &mut out);
            }
        }
        let end = pb::End {
            events: 6 * EVENTS_PER_BATCH,
            ..pb::End::default()
        };
        wire::encode_frame(Body::End(end), &mut out);
        out
    }
}

fn check_jump_flagged(stats: &[StreamStats], timeline: &[u8]) {
    let s = &stats[0];
    assert_eq!(s.events, 6 * EVENTS_PER_BATCH, "every event kept");
    assert_eq!(s.clock_jumps, 1, "{s:?}");
    let jump = s.first_jump.unwrap();
    assert_eq!(jump.kind, JumpKind::MonotonicBackwards);
    assert!((jump.size_ns + 4_000_000_000).abs() < 1_000_000, "{jump:?}");
    assert_eq!(s.clamped, 0, "the stream's time goes on: nothing to clamp");
    let table = report::table(stats, &[0]);
    assert!(table.contains("CLOCK_MONOTONIC went backwards"), "{table}");
    let has = |text: &str| timeline.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(has("rtrace: clock jump"), "the jump's instant");
    assert!(has("clock_jumps: 1"), "the process description");
    assert!(has("clock_jumps"), "the end instant's argument");
    // Each thread's events stay in order, in the timeline too.
    let mut reader = rtrace::export::MergedReader::new(timeline, "timeline".into());
    let mut last = std::collections::HashMap::new();
    let mut n = 0;
    while let Some(e) = reader.next_event().unwrap() {
        let previous = last.insert(e.event.tid, e.event.ts_ns).unwrap_or(0);
        assert!(
            e.event.ts_ns >= previous,
            "thread {} goes back",
            e.event.tid
        );
        n += 1;
    }
    assert_eq!(n, 6 * EVENTS_PER_BATCH);
}

#[test]
fn an_offline_merge_flags_a_clock_that_jumps_back_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jumpy.rtrace");
    let crafted = Crafted {
        base_ns: 50_000_000_000,
    };
    std::fs::write(&path, [crafted.hello(false), crafted.body()].concat()).unwrap();
    let (timeline, stats) = merge_into_vec(&path);
    assert_eq!(stats[0].clock, None, "offline: no estimate");
    check_jump_flagged(&stats, &timeline);
}

fn merge_into_vec(path: &std::path::Path) -> (Vec<u8>, Vec<StreamStats>) {
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl PerfettoOut for Shared {}
    let bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = PerfettoWriter::new(Shared(bytes.clone()));
    let stats = offline::merge_files(
        &[path.to_owned()],
        || Ok(sink),
        MergeConfig::default(),
        |_| {},
    )
    .unwrap()
    .stats;
    let out = bytes.lock().unwrap().clone();
    (out, stats)
}

/// Runs a live collector on a free TCP port until `client` returns.
fn collect_live(client: impl FnOnce(&str)) -> (Vec<u8>, Vec<StreamStats>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live.pftrace");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let options = LiveOptions {
        listen: vec![Address::Tcp(address.clone())],
        access: Access {
            insecure_no_auth: true,
            ..Access::default()
        },
        merge: MergeConfig::default(),
        drain: Duration::from_secs(5),
        status: false,
        nice: 0, // `collect` runs on the test's own thread
    };
    let stop = Stop::new();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let collector = {
        let (stop, out) = (stop.clone(), out.clone());
        std::thread::spawn(move || {
            let create = || rtrace_collect::output::create(&out);
            live::collect(&options, create, &stop, move |_| {
                let _ = ready_tx.send(());
            })
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    client(&address);
    stop.request();
    let collected = collector.join().unwrap().unwrap();
    (std::fs::read(&out).unwrap(), collected.stats)
}

/// Reads the collector's answer to the hello: it must accept.
fn read_accepted(conn: &mut TcpStream) {
    let reply = wire::read_reply(conn).unwrap();
    assert!(reply.accepted, "{reply:?}");
}

/// Reads one frame the collector wrote back.
fn read_frame(conn: &mut TcpStream) -> Body {
    let mut len = 0u64;
    for i in 0.. {
        let mut byte = [0u8];
        conn.read_exact(&mut byte).unwrap();
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut frame = vec![0u8; len as usize];
    conn.read_exact(&mut frame).unwrap();
    wire::decode_frame(&frame).unwrap().unwrap()
}

#[test]
fn a_live_collector_greets_answers_pings_applies_offsets_and_flags_jumps() {
    // The crafted stream's clock runs 2 s ahead of this host's.
    const AHEAD_NS: u64 = 2_000_000_000;
    let crafted = Crafted {
        base_ns: clock::monotonic_ns() + AHEAD_NS,
    };
    let (timeline, stats) = collect_live(|address| {
        let mut conn = TcpStream::connect(address).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(&crafted.hello(true)).unwrap();
        // The handshake's reply first, then the greeting.
        read_accepted(&mut conn);
        let Body::CollectorHello(hello) = read_frame(&mut conn) else {
            panic!("the collector does not greet")
        };
        assert!(hello.clock_pong);
        let mut frames = Vec::new();
        for id in 1..=4 {
            let t1 = clock::monotonic_ns() + AHEAD_NS;
            let mut ping = Vec::new();
            wire::encode_frame(
                Body::ClockPing(pb::ClockPing { id, sent_ns: t1 }),
                &mut ping,
            );
            conn.write_all(&ping).unwrap();
            let Body::ClockPong(pong) = read_frame(&mut conn) else {
                panic!("no pong")
            };
            let t4 = clock::monotonic_ns() + AHEAD_NS;
            assert_eq!((pong.id, pong.ping_sent_ns), (id, t1));
            let sample = pb::ClockSync {
                ping_sent_ns: t1,
                ping_received_ns: pong.received_ns,
                pong_sent_ns: pong.sent_ns,
                pong_received_ns: t4,
                hop: 0,
            };
            wire::encode_frame(Body::ClockSync(sample), &mut frames);
        }
        conn.write_all(&frames).unwrap();
        conn.write_all(&crafted.body()).unwrap();
        // Half-close, then wait for the collector to close: nothing unread.
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(conn.read(&mut [0u8; 16]).unwrap(), 0);
    });
    let offset = stats[0].clock.unwrap();
    assert_eq!(offset.status, ClockStatus::Measured);
    assert!(
        offset.offset_ns.abs_diff(AHEAD_NS as i64) < 1_000_000,
        "{offset:?}"
    );
    assert_eq!(offset.samples, 4);
    check_jump_flagged(&stats, &timeline);
    let has = |text: &str| timeline.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(has("rtrace clock offset (ns)") && has("clock_offset_ns: "));
}

#[test]
fn a_recorder_of_this_host_is_measured_as_the_same_host() {
    let (_, stats) = collect_live(|address| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("local", dir.path().join("spill.rtrace"));
        config.collector = Some(Address::Tcp(address.to_owned()));
        let recorder = Recorder::start(config).unwrap();
        let mut buf = recorder.new_thread_buffer(1);
        for k in 0..1000 {
            let kind = if k % 2 == 0 { Kind::Call } else { Kind::Return };
            buf.push(RawEvent::new(clock::ticks(), FunctionId(0), kind, 0));
        }
        recorder.hand_over(&mut buf);
        recorder.finish();
        assert!(!dir.path().join("spill.rtrace").exists());
    });
    let s = &stats[0];
    assert_eq!(s.events, 1000);
    let offset = s.clock.unwrap();
    assert_eq!(
        (offset.status, offset.offset_ns),
        (ClockStatus::SameHost, 0),
        "{offset:?}"
    );
    assert!(offset.samples >= 8, "the burst: {offset:?}");
    assert!(offset.uncertainty_ns < 50_000_000);
}

/// `RTRACE_CLOCK_SYNC=0`: README says such a stream is merged as it is
/// and shown as `not measured`, not as a measured zero.
#[test]
fn a_recorder_of_this_host_without_the_exchange_is_not_measured() {
    let (_, stats) = collect_live(|address| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("unsynced", dir.path().join("spill.rtrace"));
        config.collector = Some(Address::Tcp(address.to_owned()));
        config.clock_sync = config.clock_sync.with_interval("0").unwrap();
        let recorder = Recorder::start(config).unwrap();
        let mut buf = recorder.new_thread_buffer(1);
        for kind in [Kind::Call, Kind::Return] {
            buf.push(RawEvent::new(clock::ticks(), FunctionId(0), kind, 0));
        }
        recorder.hand_over(&mut buf);
        recorder.finish();
    });
    let offset = stats[0].clock.unwrap();
    assert_eq!(
        (offset.status, offset.samples),
        (ClockStatus::Unmeasured, 0)
    );
    assert_eq!(report::clock_offset(&offset), "not measured");
    assert!(report::table(&stats, &[]).contains("  not measured  "));
}

#[test]
fn a_recorder_that_does_not_exchange_is_not_greeted() {
    let crafted = Crafted {
        base_ns: clock::monotonic_ns(),
    };
    let (_, stats) = collect_live(|address| {
        let mut conn = TcpStream::connect(address).unwrap();
        conn.write_all(&crafted.hello(false)).unwrap();
        conn.write_all(&crafted.body()).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        read_accepted(&mut conn);
        let mut unread = Vec::new();
        conn.read_to_end(&mut unread).unwrap();
        assert!(
            unread.is_empty(),
            "the collector greeted a recorder that does not exchange"
        );
    });
    let offset = stats[0].clock.unwrap();
    assert_eq!(offset.status, ClockStatus::Unmeasured);
    assert_eq!(stats[0].events, 6 * EVENTS_PER_BATCH);
}

#[test]
fn chrome_json_shows_the_clock_jump_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jumpy.rtrace");
    let crafted = Crafted {
        base_ns: 70_000_000_000,
    };
    std::fs::write(&path, [crafted.hello(false), crafted.body()].concat()).unwrap();
    let out = dir.path().join("jumpy.json");
    let sink = rtrace_collect::output::create(&out).unwrap();
    let stats = offline::merge_files(&[path], || Ok(sink), MergeConfig::default(), |_| {})
        .unwrap()
        .stats;
    assert_eq!(stats[0].clock_jumps, 1);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let jumps: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "rtrace: clock jump")
        .collect();
    assert_eq!(jumps.len(), 1, "{json}");
    assert_eq!(jumps[0]["args"]["kind"], "CLOCK_MONOTONIC went backwards");
}
