//! The start of a connection: the header, an optional `Auth` frame and the
//! `Hello`, read within the hello timeout and with a small frame limit
//! (the peer has not proven anything yet); then the collector's
//! `HelloReply`. A refused peer gets the reason and a closed connection.

use std::io::Read;

use rtrace::timeline::ProcessInfo;
use rtrace::wire::{self, pb, Body};
use rtrace::{sanitize, EventReader, FrameReader};

use crate::access::Access;

/// Largest frame read before the hello is accepted (an `Auth` frame or a
/// hello with a long argv fit easily).
pub const HANDSHAKE_MAX_FRAME_BYTES: u64 = 1 << 20;

/// How a handshake ended.
pub enum Outcome<R> {
    /// The stream may go on: its reader, positioned after the hello.
    Accepted(Box<EventReader<R>>, ProcessInfo),
    /// The peer is refused; it is told why.
    Refused {
        reason: String,
        retry: bool,
        process: Option<ProcessInfo>,
    },
    /// The input is not an rtrace stream, broke, or timed out.
    Broken(String),
}

/// What the connection is allowed, as far as the handshake decides.
pub struct Terms<'a> {
    pub access: &'a Access,
    pub tcp: bool,
    /// Claims a stream slot (`--max-streams`); false when none is left.
    pub take_stream: &'a dyn Fn() -> bool,
}

/// Reads the start of a stream from `input` and decides on it.
pub fn handshake<R: Read>(input: R, name: String, terms: &Terms) -> Outcome<R> {
    let mut frames = match FrameReader::with_header(input, name) {
        Ok(frames) => frames,
        Err(e) => return Outcome::Broken(e.to_string()),
    };
    frames.set_max_frame_bytes(HANDSHAKE_MAX_FRAME_BYTES);
    let (token, hello) = match read_hello(&mut frames) {
        Ok(found) => found,
        Err(reason) => return Outcome::Broken(reason),
    };
    let process = sanitize::process(ProcessInfo::from(&hello));
    let refuse = |reason: String, retry: bool| Outcome::Refused {
        reason,
        retry,
        process: Some(process.clone()),
    };
    if terms.access.needs_token(terms.tcp) {
        match &token {
            None => return refuse(
                "no token: this collector requires one on TCP (set RTRACE_TOKEN to the collector's token)".into(),
                false,
            ),
            Some(t) if !terms.access.token_matches(t) => {
                return refuse(
                    "wrong token (RTRACE_TOKEN differs from the collector's --token)".into(),
                    false,
                )
            }
            Some(_) => {}
        }
    }
    frames.set_max_frame_bytes(wire::MAX_FRAME_BYTES);
    let reader = match EventReader::with_hello(frames, hello) {
        Ok(reader) => reader,
        Err(e) => return refuse(e.to_string(), false),
    };
    if !(terms.take_stream)() {
        let limit = terms.access.max_streams;
        return refuse(
            format!("this collector has taken its limit of {limit} streams (--max-streams)"),
            false,
        );
    }
    Outcome::Accepted(Box::new(reader), process)
}

/// The token (if an `Auth` frame came first) and the hello.
fn read_hello<R: Read>(frames: &mut FrameReader<R>) -> Result<(Option<String>, pb::Hello), String> {
    let mut next = || frames.next_frame().map_err(|e| e.to_string());
    let (token, body) = match next()? {
        Some(Body::Auth(auth)) => (Some(auth.token), next()?),
        other => (None, other),
    };
    match body {
        Some(Body::Hello(hello)) => Ok((token, hello)),
        Some(_) => Err("the first frame is not a hello".into()),
        None => Err("closed before sending its hello".into()),
    }
}

/// The reply to a hello.
pub fn reply(accepted: bool, reason: &str, retry: bool) -> Vec<u8> {
    wire::reply_bytes(&pb::HelloReply {
        accepted,
        reason: reason.to_owned(),
        retry,
        protocol_version: u32::from(wire::FORMAT_VERSION),
    })
}
