//! User events ("marks"): spans, instants, counters and the two ends of a
//! flow arrow, with small typed arguments. Front-ends (Python, the native
//! API) record them into the same thread buffers as calls, so they keep
//! their place among the thread's calls.
//!
//! In a buffer a mark is one `RawEvent` of a mark kind whose `line` field
//! counts the payload slots that follow it: 16-byte slots holding the
//! flow id, the counter value and the arguments, packed by `Payload`. The
//! writer turns each mark's payload into a `pb::Mark`.

use crate::event::{FunctionId, Kind, RawEvent};

/// Longest argument payload of one mark, in bytes; longer strings are cut
/// (ending in `…`) and arguments beyond it dropped.
pub const MAX_PAYLOAD_BYTES: usize = 1008;
/// Slots of the largest payload.
pub const MAX_PAYLOAD_SLOTS: usize = MAX_PAYLOAD_BYTES / SLOT_BYTES;
const SLOT_BYTES: usize = 16;

/// An argument's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

/// A named argument of a mark.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub key: String,
    pub value: ArgValue,
}

/// What a mark carries beyond its name and kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mark {
    /// For `FlowOut` / `FlowIn`: the flow's id (never 0).
    pub flow_id: u64,
    /// For `Counter`: the value.
    pub value: f64,
    pub args: Vec<Arg>,
}

/// A borrowed argument, as front-ends pass them in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgRef<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bool(bool),
}

const TAG_INT: u8 = 1;
const TAG_FLOAT: u8 = 2;
const TAG_STR: u8 = 3;
const TAG_BOOL: u8 = 4;

/// A mark's payload as it is built: the flow id and value, and the
/// encoded arguments (no allocation unless there are arguments), then
/// written into a buffer as slots.
#[derive(Debug, Clone)]
pub struct Payload {
    head: [u8; HEAD_BYTES],
    args: Vec<u8>,
}

/// Flow id, value and argument count.
const HEAD_BYTES: usize = 17;

impl Payload {
    /// A payload with the flow id and counter value.
    #[inline]
    pub fn new(flow_id: u64, value: f64) -> Payload {
        let mut head = [0u8; HEAD_BYTES];
        head[..8].copy_from_slice(&flow_id.to_le_bytes());
        head[8..16].copy_from_slice(&value.to_le_bytes());
        Payload {
            head,
            args: Vec::new(),
        }
    }

    /// Adds an argument; returns false (adding nothing) when it does not
    /// fit even with its string cut short.
    pub fn arg(&mut self, key: &str, value: ArgRef<'_>) -> bool {
        let key = cut(key, 64);
        let used = HEAD_BYTES + self.args.len();
        let fixed = 1 + key.len() + 1;
        let body_len = match value {
            ArgRef::Int(_) | ArgRef::Float(_) => 8,
            ArgRef::Bool(_) => 1,
            ArgRef::Str(_) => 2,
        };
        if self.head[16] == u8::MAX || used + fixed + body_len > MAX_PAYLOAD_BYTES {
            return false;
        }
        let out = &mut self.args;
        out.push(key.len() as u8);
        out.extend_from_slice(key.as_bytes());
        match value {
            ArgRef::Int(v) => {
                out.push(TAG_INT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ArgRef::Float(v) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ArgRef::Bool(v) => {
                out.push(TAG_BOOL);
                out.push(u8::from(v));
            }
            ArgRef::Str(text) => {
                let room = MAX_PAYLOAD_BYTES - used - fixed - 2;
                out.push(TAG_STR);
                if text.len() <= room {
                    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
                    out.extend_from_slice(text.as_bytes());
                } else {
                    let kept = cut(text, room.saturating_sub('…'.len_utf8()));
                    let len = kept.len() + '…'.len_utf8();
                    out.extend_from_slice(&(len as u16).to_le_bytes());
                    out.extend_from_slice(kept.as_bytes());
                    out.extend_from_slice("…".as_bytes());
                }
            }
        }
        self.head[16] += 1;
        true
    }

    /// Number of slots the payload takes: none for an empty one (no flow
    /// id, value or arguments), which reads back as `Mark::default()`.
    #[inline]
    pub fn slots(&self) -> usize {
        if self.args.is_empty() {
            // Without arguments the count byte is left out: one slot.
            return usize::from(self.head != [0u8; HEAD_BYTES]);
        }
        (HEAD_BYTES + self.args.len()).div_ceil(SLOT_BYTES)
    }

    /// The payload as slots, appended to `out`.
    pub(crate) fn write_slots(&self, out: &mut Vec<RawEvent>) {
        let slots = self.slots();
        let mut bytes = self.head.iter().chain(self.args.iter()).copied();
        for _ in 0..slots {
            let mut chunk = [0u8; SLOT_BYTES];
            for byte in chunk.iter_mut() {
                *byte = bytes.next().unwrap_or(0);
            }
            out.push(slot_from_bytes(&chunk));
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn slot_from_bytes(chunk: &[u8]) -> RawEvent {
    let mut ticks = [0u8; 8];
    let mut code = [0u8; 4];
    let mut line = [0u8; 4];
    ticks.copy_from_slice(&chunk[..8]);
    code.copy_from_slice(&chunk[8..12]);
    line.copy_from_slice(&chunk[12..16]);
    RawEvent {
        ticks: u64::from_le_bytes(ticks),
        code: u32::from_le_bytes(code),
        line: u32::from_le_bytes(line),
    }
}

fn slot_bytes(slot: &RawEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(&slot.ticks.to_le_bytes());
    out.extend_from_slice(&slot.code.to_le_bytes());
    out.extend_from_slice(&slot.line.to_le_bytes());
}

/// The mark event that heads a payload of `slots` slots.
pub fn mark_event(ticks: u64, name: FunctionId, kind: Kind, slots: usize) -> RawEvent {
    RawEvent::new(ticks, name, kind, slots as u32)
}

/// Decodes the payload slots written by `Payload::write_slots`. Bad bytes
/// (which only a bug could produce) end the argument list early.
pub(crate) fn decode_slots(slots: &[RawEvent]) -> Mark {
    let mut bytes = Vec::with_capacity(slots.len() * SLOT_BYTES);
    for slot in slots {
        slot_bytes(slot, &mut bytes);
    }
    let mut mark = Mark::default();
    if bytes.len() < SLOT_BYTES {
        return mark;
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    mark.flow_id = u64::from_le_bytes(word);
    word.copy_from_slice(&bytes[8..16]);
    mark.value = f64::from_le_bytes(word);
    let count = bytes.get(16).copied().unwrap_or(0);
    let mut at = 17;
    for _ in 0..count {
        match decode_arg(&bytes, &mut at) {
            Some(arg) => mark.args.push(arg),
            None => break,
        }
    }
    mark
}

fn decode_arg(bytes: &[u8], at: &mut usize) -> Option<Arg> {
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let out = bytes.get(*at..*at + n)?;
        *at += n;
        Some(out)
    };
    let key_len = take(at, 1)?[0] as usize;
    let key = String::from_utf8_lossy(take(at, key_len)?).into_owned();
    let tag = take(at, 1)?[0];
    let word = |at: &mut usize| -> Option<[u8; 8]> { take(at, 8)?.try_into().ok() };
    let value = match tag {
        TAG_INT => ArgValue::Int(i64::from_le_bytes(word(at)?)),
        TAG_FLOAT => ArgValue::Float(f64::from_le_bytes(word(at)?)),
        TAG_BOOL => ArgValue::Bool(take(at, 1)?[0] != 0),
        TAG_STR => {
            let len = u16::from_le_bytes(take(at, 2)?.try_into().ok()?) as usize;
            ArgValue::Str(String::from_utf8_lossy(take(at, len)?).into_owned())
        }
        _ => return None,
    };
    Some(Arg { key, value })
}

/// Flow tokens: W3C `traceparent` values, `00-<trace id>-<flow id>-01`.
///
/// The flow id is the `parent-id` field (16 hex digits, never zero), so a
/// token can be sent as a `traceparent` header, or beside one. The trace id
/// is the recording's own (random per process) unless the caller passes
/// one through (`token_with_trace`), e.g. to continue a request's trace.
pub mod token {
    use std::fmt::Write as _;

    /// Length of a token.
    pub const LEN: usize = 55;

    /// The token for `flow_id` in trace `trace_id`.
    pub fn format(trace_id: u128, flow_id: u64) -> String {
        let mut s = String::with_capacity(LEN);
        let _ = write!(s, "00-{trace_id:032x}-{flow_id:016x}-01");
        s
    }

    /// Reads a token back: `(trace id, flow id)`. Accepts any W3C
    /// `traceparent` of version 00 (and, as the spec asks, later versions
    /// by their first four fields), or a bare 16-hex-digit flow id.
    pub fn parse(token: &str) -> Result<(u128, u64), String> {
        let token = token.trim();
        if token.len() == 16 {
            let id = u64::from_str_radix(token, 16).map_err(|_| bad(token))?;
            return nonzero(0, id, token);
        }
        let mut parts = token.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(token));
        };
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) {
            return Err(bad(token));
        }
        if !hex(flags, 2) || (version == "00" && parts.next().is_some()) {
            return Err(bad(token));
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| bad(token))?;
        let flow_id = u64::from_str_radix(parent, 16).map_err(|_| bad(token))?;
        nonzero(trace_id, flow_id, token)
    }

    fn nonzero(trace_id: u128, flow_id: u64, token: &str) -> Result<(u128, u64), String> {
        if flow_id == 0 {
            return Err(format!("flow token {token:?} has an all-zero flow id"));
        }
        Ok((trace_id, flow_id))
    }

    fn bad(token: &str) -> String {
        let shown: String = token.chars().take(80).collect();
        format!(
            "{shown:?} is not a flow token: expected a W3C traceparent \
             (00-<32 hex digits>-<16 hex digits>-<2 hex digits>) as returned by flow_out()"
        )
    }
}

/// Hands out flow ids: unique within a process, and with 64 random bits
/// per process, unlikely to collide across processes.
#[derive(Debug)]
pub struct FlowIds {
    seed: u64,
    next: std::sync::atomic::AtomicU64,
    trace_id: u128,
}

impl FlowIds {
    /// Ids seeded from the OS's randomness (falling back to time and pid).
    pub fn new() -> FlowIds {
        let mut seed = [0u8; 24];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
        if read.is_err() {
            let t = crate::clock::unix_ns();
            seed[..8].copy_from_slice(&t.to_le_bytes());
            seed[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&seed[..8]);
        let mut trace = [0u8; 16];
        trace.copy_from_slice(&seed[8..]);
        FlowIds {
            seed: u64::from_le_bytes(word),
            next: std::sync::atomic::AtomicU64::new(1),
            trace_id: u128::from_le_bytes(trace).max(1),
        }
    }

    /// The recording's trace id (for tokens).
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// A fresh, non-zero flow id.
    pub fn next(&self) -> u64 {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // splitmix64 of seed + n: a bijection of n, so ids never repeat
        // within a process.
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
    }
}

impl Default for FlowIds {
    fn default() -> Self {
        FlowIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_every_type() {
        let mut p = Payload::new(42, 2.5);
        assert!(p.arg("n", ArgRef::Int(-7)));
        assert!(p.arg("x", ArgRef::Float(0.25)));
        assert!(p.arg("ok", ArgRef::Bool(true)));
        assert!(p.arg("who", ArgRef::Str("wörld")));
        let mut slots = Vec::new();
        p.write_slots(&mut slots);
        assert_eq!(slots.len(), p.slots());
        let mark = decode_slots(&slots);
        assert_eq!(mark.flow_id, 42);
        assert_eq!(mark.value, 2.5);
        let keys: Vec<_> = mark.args.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["n", "x", "ok", "who"]);
        assert_eq!(mark.args[0].value, ArgValue::Int(-7));
        assert_eq!(mark.args[3].value, ArgValue::Str("wörld".into()));
    }

    #[test]
    fn long_strings_are_cut_and_extra_args_dropped() {
        let mut p = Payload::new(0, 0.0);
        let long = "é".repeat(2000);
        assert!(p.arg("s", ArgRef::Str(&long)));
        assert!(p.slots() <= MAX_PAYLOAD_SLOTS);
        assert!(!p.arg("more", ArgRef::Int(1)));
        let mut slots = Vec::new();
        p.write_slots(&mut slots);
        let mark = decode_slots(&slots);
        let ArgValue::Str(s) = &mark.args[0].value else {
            panic!("not a string")
        };
        assert!(s.ends_with('…') && s.len() <= MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn an_empty_payload_takes_no_slot_and_reads_as_default() {
        assert_eq!(Payload::new(0, 0.0).slots(), 0);
        assert_eq!(Payload::new(1, 0.0).slots(), 1);
        let mut slots = Vec::new();
        Payload::new(7, 2.5).write_slots(&mut slots);
        let mark = decode_slots(&slots);
        assert_eq!((mark.flow_id, mark.value, mark.args.len()), (7, 2.5, 0));
        assert_eq!(decode_slots(&[]), Mark::default());
    }

    #[test]
    fn tokens_are_traceparents_and_parse_back() {
        let t = token::format(0xabc, 0x1234);
        assert_eq!(t, "00-00000000000000000000000000000abc-0000000000001234-01");
        assert_eq!(t.len(), token::LEN);
        assert_eq!(token::parse(&t).unwrap(), (0xabc, 0x1234));
        assert_eq!(token::parse("00000000000000ff").unwrap(), (0, 0xff));
        for bad in [
            "",
            "00-xyz",
            "00-0-0-0",
            &t[..54],
            "ff-00000000000000000000000000000abc-0000000000001234-01",
        ] {
            assert!(token::parse(bad).is_err(), "{bad}");
        }
        let zero = "00-00000000000000000000000000000abc-0000000000000000-01";
        assert!(token::parse(zero).unwrap_err().contains("all-zero"));
    }

    #[test]
    fn flow_ids_do_not_repeat() {
        let ids = FlowIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(ids.next()));
        }
    }
}
