//! A Rust client of `examples/native/service.py`: sends requests over a
//! Unix socket, each carrying a flow token, and records the replies' flows.
//! Its spans come from `tracing` macros, recorded by `RtraceLayer`.
//!
//! Usage: rust-client SOCKET [REQUESTS]   (records to $RTRACE_COLLECTOR,
//! else to ./rtrace-rust-client-<pid>.rtrace)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use rtrace::tracing_layer::RtraceLayer;
use tracing::{info, info_span, instrument};
use tracing_subscriber::prelude::*;

#[instrument(skip(conn, reader))]
fn request(
    conn: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
    n: u32,
) -> std::io::Result<u64> {
    let token = rtrace::flow_out();
    writeln!(conn, "{token} rust-client {n}")?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let (reply_token, result) = line.trim().split_once(' ').unwrap_or(("", "0"));
    if let Err(e) = rtrace::flow_in(reply_token) {
        eprintln!("rust-client: {e}");
    }
    let result = result.parse().unwrap_or(0);
    info!(result, "reply");
    Ok(result)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().expect("usage: rust-client SOCKET [REQUESTS]");
    let requests: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);

    tracing_subscriber::registry()
        .with(RtraceLayer::new())
        .init();
    if let Err(e) = rtrace::init("rust-client") {
        eprintln!("rust-client: not recording: {e}");
    }
    rtrace::thread_name("rust-main");

    let mut conn = UnixStream::connect(&socket)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut total = 0;
    {
        let _session = info_span!("session", requests).entered();
        for i in 0..requests {
            rtrace::counter("rust_requests_sent", f64::from(i + 1));
            total += request(&mut conn, &mut reader, 1000 + i)?;
        }
    }
    rtrace::shutdown();
    println!("rust-client: {requests} requests, total {total}");
    Ok(())
}
