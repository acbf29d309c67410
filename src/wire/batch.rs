//! The hot path of reading a stream: a frame holding an `EventBatch`,
//! parsed by hand into views of its packed fields, so that the reader
//! decodes events straight from the frame's bytes, with no vector per
//! field and no `Frame` struct per batch.
//!
//! Only the layout prost writes is taken: the frame is exactly one `batch`
//! field, and in it every repeated field comes at most once, packed, with
//! no unknown field. Anything else (a valid but unusual encoding, or bad
//! bytes) gives `None`, and the caller decodes the frame with prost: both
//! paths accept, reject and read exactly the same frames, which the
//! property tests in `tests/stream_props.rs` and the unit tests below
//! check against prost.

use prost::Message;

use super::palette::Palette;
use super::pb;
use crate::varint::PutBytes;

/// Key of `Frame.batch` (field 4, length-delimited).
const FRAME_BATCH: u8 = 0x22;
/// Keys of the fields of `EventBatch`.
const TID: u8 = 0x08;
const BASE_TICKS: u8 = 0x10;
const TICK_DELTAS: u8 = 0x1a;
const CODES: u8 = 0x22;
const LINES: u8 = 0x2a;
const LOST_BEFORE: u8 = 0x30;
const MARKS: u8 = 0x3a;
const PALETTE: u8 = 0x42;

/// An `EventBatch` as views of the frame's bytes.
#[derive(Debug, Clone, Default)]
pub struct BatchView<'a> {
    pub tid: u64,
    pub base_ticks: u64,
    pub lost_before: u64,
    /// Packed `sint64` tick deltas (zigzag varints).
    pub tick_deltas: Varints<'a>,
    /// Packed `uint64` event codes.
    pub codes: Varints<'a>,
    /// Packed `uint32` line numbers.
    pub lines: Varints<'a>,
    /// The marks, decoded (user events are rare).
    pub marks: Vec<pb::Mark>,
    /// Packed `uint64` codes that `codes` index, when not empty.
    pub palette: Varints<'a>,
}

/// The batch in `frame` (a frame's bytes without the length prefix), or
/// `None` when the frame is not a batch in prost's layout (decode it with
/// `decode_frame` then).
pub fn parse_frame(frame: &[u8]) -> Option<BatchView<'_>> {
    let (&key, rest) = frame.split_first()?;
    if key != FRAME_BATCH {
        return None;
    }
    let (len, used) = varint(rest)?;
    let body = rest.get(used..)?;
    if len != body.len() as u64 {
        return None;
    }
    parse_batch(body)
}

fn parse_batch(mut bytes: &[u8]) -> Option<BatchView<'_>> {
    let mut view = BatchView::default();
    let mut seen = 0u16;
    while let Some((&key, rest)) = bytes.split_first() {
        let (value, used) = varint(rest)?;
        bytes = &rest[used..];
        match key {
            TID => view.tid = value,
            BASE_TICKS => view.base_ticks = value,
            LOST_BEFORE => view.lost_before = value,
            TICK_DELTAS | CODES | LINES | MARKS | PALETTE => {
                let len = usize::try_from(value).ok()?;
                let field = bytes.get(..len)?;
                bytes = &bytes[len..];
                // The field's bit in `seen`: (key >> 3) is 3, 4, 5, 7 or 8.
                let bit = 1u16 << (key >> 3);
                if key != MARKS {
                    if seen & bit != 0 {
                        return None;
                    }
                    seen |= bit;
                }
                match key {
                    TICK_DELTAS => view.tick_deltas = Varints::new(field)?,
                    CODES => view.codes = Varints::new(field)?,
                    LINES => view.lines = Varints::new(field)?,
                    PALETTE => view.palette = Varints::new(field)?,
                    _ => view.marks.push(pb::Mark::decode(field).ok()?),
                }
            }
            _ => return None,
        }
    }
    Some(view)
}

/// Reads one varint at the start of `bytes` as prost does: its value and
/// length, or `None` for a malformed or unfinished one.
#[inline]
pub(crate) fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // The tenth byte may only hold the top bit of a u64.
            return (i < 9 || byte < 2).then_some((value, i + 1));
        }
    }
    None
}

/// A packed repeated field whose varints are all well formed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Varints<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Varints<'a> {
    /// Checks every varint of a packed field; `None` if one is malformed.
    ///
    /// Eight bytes at a time: a word's top bits say which bytes end a
    /// varint. A run of continuation bytes that could reach the tenth byte
    /// (nine or more, within a word or across two) sends the field to the
    /// byte-by-byte check, which also judges the tenth byte; real tick
    /// deltas and codes are 1–3 bytes.
    fn new(bytes: &'a [u8]) -> Option<Self> {
        const TOPS: u64 = 0x8080_8080_8080_8080;
        let mut words = bytes.chunks_exact(8);
        let mut count = 0usize;
        // Continuation bytes at the end of the previous word.
        let mut carry = 0u32;
        for word in words.by_ref() {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            let ends = !word & TOPS;
            if ends == 0 || carry + ends.trailing_zeros() / 8 >= 9 {
                return Self::checked_bytewise(bytes);
            }
            carry = ends.leading_zeros() / 8;
            // The end bits, moved to each byte's bottom, summed into the
            // top byte by the multiplication.
            count += ((ends >> 7).wrapping_mul(0x0101_0101_0101_0101) >> 56) as usize;
        }
        let mut run = carry;
        for &byte in words.remainder() {
            if byte >= 0x80 {
                run += 1;
                if run >= 9 {
                    return Self::checked_bytewise(bytes);
                }
            } else {
                run = 0;
                count += 1;
            }
        }
        (run == 0).then_some(Varints { bytes, count })
    }

    /// `new`, byte by byte: a varint has at most ten bytes, the tenth
    /// holding only the top bit of a u64, and the field ends with one.
    #[cold]
    #[inline(never)]
    fn checked_bytewise(bytes: &'a [u8]) -> Option<Self> {
        let mut count = 0;
        let mut run = 0u32;
        for &byte in bytes {
            if byte >= 0x80 {
                run += 1;
                if run == 10 {
                    return None;
                }
            } else {
                if run == 9 && byte >= 2 {
                    return None;
                }
                run = 0;
                count += 1;
            }
        }
        (run == 0).then_some(Varints { bytes, count })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the field holds no value.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The values, in order.
    pub fn iter(&self) -> VarintIter<'a> {
        VarintIter { bytes: self.bytes }
    }
}

/// The values of a checked packed field.
#[derive(Debug, Clone)]
pub struct VarintIter<'a> {
    bytes: &'a [u8],
}

impl Iterator for VarintIter<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        // One load for the common one- and two-byte varints (most tick
        // deltas and codes), where eight bytes remain.
        if let Some(word) = self.bytes.first_chunk::<8>() {
            let word = u64::from_le_bytes(*word);
            if word & 0x80 == 0 {
                self.bytes = &self.bytes[1..];
                return Some(word & 0x7f);
            }
            if word & 0x8000 == 0 {
                self.bytes = &self.bytes[2..];
                return Some(word & 0x7f | (word >> 1) & 0x3f80);
            }
        }
        self.next_bytewise()
    }
}

impl VarintIter<'_> {
    /// `next` one byte at a time: long varints and a field's last bytes.
    #[inline(never)]
    fn next_bytewise(&mut self) -> Option<u64> {
        let (&first, rest) = self.bytes.split_first()?;
        // Checked in `Varints::new`: the varint ends within the field.
        let mut value = u64::from(first & 0x7f);
        let mut shift = 7;
        let mut i = 0;
        if first >= 0x80 {
            while let Some(&byte) = rest.get(i) {
                i += 1;
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    break;
                }
                shift += 7;
            }
        }
        self.bytes = &rest[i..];
        Some(value)
    }
}

/// Decodes a zigzag varint's value (`sint64`).
#[inline]
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Encodes a value as a zigzag varint's value (`sint64`).
#[inline]
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// The writing side of the hot path: the frames of batches of plain events
/// — calls, returns, C calls and lines, no user events and no `log_args`
/// texts — written by hand, exactly the bytes that prost writes for
/// `wire::batch_body`'s `EventBatch` (the unit tests compare). Building
/// prost's struct (a vector per field) and encoding it took ~14 % of a
/// flat-out traced process's CPU, on its writer thread.
///
/// The writer keeps one, with its scratch space, from batch to batch.
/// A batch's packed fields are written in one pass over its events into
/// that space, then copied after the frame's head, whose lengths are known
/// only then (a pass measuring every varint first, then one writing them,
/// took up to twice the CPU: README, "The recorder's writer thread").
#[derive(Debug, Default)]
pub struct PlainFrames {
    /// Ranks each batch's codes; they are written as ranks when that makes
    /// the batch smaller (`wire::palette`).
    palette: Palette,
    /// The packed fields of the batch being encoded. Never shortened: as
    /// long as the longest batch's fields could be, so that the pass
    /// checks no capacity, and zeroed only when they grow.
    deltas: Vec<u8>,
    codes: Vec<u8>,
    lines: Vec<u8>,
    /// What the pass does with each event's code, as the previous batch
    /// needed (a program's batches are alike from one to the next).
    numbering: Numbering,
}

/// What `PlainFrames`' pass does with each event's code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Numbering {
    /// Writes it as it is (the codes took a byte each).
    #[default]
    Off,
    /// Numbers it in the palette (in the order first met) and writes the
    /// number as one byte: its rank, when a batch has at most 128 codes.
    Numbers,
    /// The same, and the palette keeps each event's number, from which
    /// `Palette::rank` counts the codes of a batch with more than 128.
    Events,
}

impl Numbering {
    /// As the `MODE` of `PlainFrames::pass`.
    const fn mode(self) -> u8 {
        self as u8
    }
}

/// What the codes field of `PlainFrames`' scratch space holds after the
/// pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodesField {
    /// The codes as they are.
    Codes,
    /// Each code's number in the palette, as one byte.
    Numbers,
    /// Nothing yet (`Numbering::Events`: written from the ranks).
    Empty,
}

/// Longest varints of the packed fields' values.
const DELTA_MAX: usize = 10;
const CODE_MAX: usize = 5;

impl PlainFrames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends to `out` the length-delimited frame of `events` (one
    /// thread's, `tid`), after `lost_before` events lost. Returns false,
    /// appending nothing, when a batch holds anything but plain events:
    /// encode it with prost then.
    pub fn encode(
        &mut self,
        tid: u64,
        events: &[crate::event::RawEvent],
        lost_before: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        let n = events.len();
        grow_zeroed(&mut self.deltas, n * DELTA_MAX);
        grow_zeroed(&mut self.codes, n * CODE_MAX);
        let base_ticks = events.first().map_or(0, |e| e.ticks);
        let numbering = self.numbering;
        if numbering != Numbering::Off {
            self.palette.clear(n);
        }
        // A copy of the pass per way, so that none tests it per event.
        let pass = match numbering {
            Numbering::Off => self.pass::<{ Numbering::Off.mode() }>(events, base_ticks),
            Numbering::Numbers => self.pass::<{ Numbering::Numbers.mode() }>(events, base_ticks),
            Numbering::Events => self.pass::<{ Numbering::Events.mode() }>(events, base_ticks),
        };
        let Some(mut lens) = pass else {
            return false;
        };
        let palette_len = self.settle_codes(events, numbering, &mut lens.codes);
        self.write_frame(tid, base_ticks, lost_before, &lens, palette_len, out);
        true
    }

    /// Leaves the codes field as the frame carries it — the codes, or
    /// their ranks when a palette makes the batch smaller — with `codes_len`
    /// its length (the codes' on entry), and decides how the next batch's
    /// pass numbers its codes. Returns the palette's length (0: none).
    fn settle_codes(
        &mut self,
        events: &[crate::event::RawEvent],
        numbering: Numbering,
        codes_len: &mut usize,
    ) -> usize {
        let n = events.len();
        let mut field = match numbering {
            Numbering::Off => CodesField::Codes,
            Numbering::Numbers => CodesField::Numbers,
            Numbering::Events => CodesField::Empty,
        };
        // A batch whose codes all take one byte (fib's: its functions were
        // met first) gains nothing from a palette: no numbering then.
        let ranked = if *codes_len > n {
            if field == CodesField::Codes {
                self.palette.clear(n);
                let mut codes = Put::new(&mut self.codes);
                for event in events {
                    codes.byte(self.palette.number(event.code) as u8);
                }
                field = CodesField::Numbers;
            }
            if !self.palette.ranks_are_numbers() && numbering != Numbering::Events {
                // Ranked by frequency: counted over every event's number,
                // numbered again in the same order.
                self.palette.clear(n);
                for event in events {
                    self.palette.add(event.code);
                }
            }
            self.palette.rank_if_smaller(*codes_len)
        } else {
            None
        };
        self.numbering = if *codes_len <= n {
            Numbering::Off
        } else if self.palette.ranks_are_numbers() {
            Numbering::Numbers
        } else {
            Numbering::Events
        };
        let mut codes = Put::new(&mut self.codes);
        match ranked {
            // The numbers written are the ranks.
            Some(_) if field == CodesField::Numbers && self.palette.ranks_are_numbers() => {}
            Some(_) => {
                for rank in self.palette.ranks() {
                    codes.varint(u64::from(rank));
                }
            }
            // No palette after all: the codes as they are.
            None if field != CodesField::Codes => {
                for event in events {
                    codes.varint(u64::from(event.code));
                }
            }
            None => {}
        }
        if let Some(ranked) = ranked {
            *codes_len = ranked.ranks_len;
        }
        debug_assert!(codes.pos == 0 || codes.pos == *codes_len);
        ranked.map_or(0, |r| r.palette_len)
    }

    /// Appends the frame: its head, then the fields from the scratch space
    /// (`lens` long) and the palette.
    fn write_frame(
        &self,
        tid: u64,
        base_ticks: u64,
        lost_before: u64,
        lens: &Pass,
        palette_len: usize,
        out: &mut Vec<u8>,
    ) {
        use prost::encoding::encoded_len_varint as varint_len;
        let packed = |len: usize| {
            if len > 0 {
                1 + varint_len(len as u64) + len
            } else {
                0
            }
        };
        let scalar = |value: u64| if value > 0 { 1 + varint_len(value) } else { 0 };
        let batch_len = scalar(tid)
            + scalar(base_ticks)
            + packed(lens.deltas)
            + packed(lens.codes)
            + packed(lens.lines)
            + scalar(lost_before)
            + packed(palette_len);
        let frame_len = 1 + varint_len(batch_len as u64) + batch_len;
        let start = out.len();
        out.reserve(varint_len(frame_len as u64) + frame_len);
        prost::encoding::encode_varint(frame_len as u64, out);
        out.push(FRAME_BATCH);
        prost::encoding::encode_varint(batch_len as u64, out);
        for (key, value) in [(TID, tid), (BASE_TICKS, base_ticks)] {
            if value > 0 {
                out.push(key);
                prost::encoding::encode_varint(value, out);
            }
        }
        // Every event has a delta and a code of at least one byte each, so
        // both fields are there or neither.
        let fields = [
            (TICK_DELTAS, &self.deltas[..lens.deltas]),
            (CODES, &self.codes[..lens.codes]),
            (LINES, &self.lines[..lens.lines]),
        ];
        for (key, field) in fields {
            if !field.is_empty() {
                field_head(out, key, field.len());
                out.extend_from_slice(field);
            }
        }
        if lost_before > 0 {
            out.push(LOST_BEFORE);
            prost::encoding::encode_varint(lost_before, out);
        }
        if palette_len > 0 {
            field_head(out, PALETTE, palette_len);
            for code in self.palette.codes() {
                prost::encoding::encode_varint(u64::from(code), out);
            }
        }
        debug_assert_eq!(out.len() - start, varint_len(frame_len as u64) + frame_len);
    }

    /// Writes each event's tick delta and code, and each line event's
    /// line, into the scratch space; `None` at an event that is not plain.
    /// With `Numbering::Off` as `MODE` the codes are written as they are;
    /// otherwise each is numbered in the palette and only its length
    /// measured, and its number written as one byte (`Numbers`) or kept by
    /// the palette (`Events`).
    #[inline(always)]
    fn pass<const MODE: u8>(
        &mut self,
        events: &[crate::event::RawEvent],
        base_ticks: u64,
    ) -> Option<Pass> {
        use crate::event::Kind;
        use prost::encoding::encoded_len_varint as varint_len;
        // The raw kinds (the code's low bits) that are not a plain call or
        // return: a line, or a user event (`Kind::MARKS`). One test per
        // event instead of decoding its kind.
        const LINE: u64 = Kind::Line as u64;
        const NOT_PLAIN: u64 = (1 << LINE) | Kind::MARKS;
        let mut deltas = Put::new(&mut self.deltas);
        let mut codes = Put::new(&mut self.codes);
        let mut codes_len = 0;
        let mut lines_len = 0;
        let mut previous = base_ticks;
        for event in events {
            let kind = u64::from(event.code) & Kind::MASK;
            if NOT_PLAIN & (1 << kind) != 0 {
                if kind != LINE {
                    return None;
                }
                // Lines are rare (`lines=True` only): room as they come.
                grow_zeroed(&mut self.lines, lines_len + CODE_MAX);
                let mut lines = Put {
                    bytes: &mut self.lines,
                    pos: lines_len,
                };
                lines.varint(u64::from(event.line));
                lines_len = lines.pos;
            }
            deltas.varint(zigzag(event.ticks.wrapping_sub(previous) as i64));
            previous = event.ticks;
            if MODE != Numbering::Off.mode() {
                // The number is the code's rank if the batch has at most
                // 128 codes; `settle_codes` writes the field again otherwise.
                codes_len += varint_len(u64::from(event.code));
                if MODE == Numbering::Events.mode() {
                    // Written from the ranks after (`settle_codes`).
                    self.palette.add(event.code);
                } else {
                    codes.byte(self.palette.number(event.code) as u8);
                }
            } else {
                codes.varint(u64::from(event.code));
            }
        }
        Some(Pass {
            deltas: deltas.pos,
            codes: if MODE != Numbering::Off.mode() {
                codes_len
            } else {
                codes.pos
            },
            lines: lines_len,
        })
    }
}

/// The lengths of the packed fields a pass wrote (the codes': measured,
/// when numbered).
struct Pass {
    deltas: usize,
    codes: usize,
    lines: usize,
}

/// Makes `bytes` at least `len` long (zeroed where it grows).
#[inline]
fn grow_zeroed(bytes: &mut Vec<u8>, len: usize) {
    if bytes.len() < len {
        bytes.resize(len, 0);
    }
}

/// Appends a length-delimited field's key and length.
fn field_head(out: &mut Vec<u8>, key: u8, len: usize) {
    out.push(key);
    prost::encoding::encode_varint(len as u64, out);
}

/// Writes a packed field forward into bytes sized for it.
struct Put<'a> {
    bytes: &'a mut [u8],
    pos: usize,
}

impl<'a> Put<'a> {
    fn new(bytes: &'a mut [u8]) -> Self {
        Put { bytes, pos: 0 }
    }
}

impl PutBytes for Put<'_> {
    #[inline(always)]
    fn byte(&mut self, byte: u8) {
        self.bytes[self.pos] = byte;
        self.pos += 1;
    }

    /// Most tick deltas and codes take one or two bytes: those are stored
    /// with one bounds check, not one per byte.
    #[inline(always)]
    fn varint(&mut self, value: u64) {
        if value < 1 << 7 {
            self.byte(value as u8);
        } else if value < 1 << 14 {
            let two = [value as u8 | 0x80, (value >> 7) as u8];
            self.bytes[self.pos..self.pos + 2].copy_from_slice(&two);
            self.pos += 2;
        } else {
            let mut value = value;
            while value >= 0x80 {
                self.byte(value as u8 | 0x80);
                value >>= 7;
            }
            self.byte(value as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FunctionId, Kind, RawEvent};
    use crate::wire::{decode_frame, encode_frame, Body};

    fn batch() -> pb::EventBatch {
        pb::EventBatch {
            tid: 77,
            base_ticks: 1 << 40,
            tick_deltas: vec![0, 5, -3, i64::MAX, i64::MIN, 300],
            codes: vec![0x11, 0x22, 0x3f4, u64::MAX, 0, 1 << 35],
            lines: vec![7, u32::MAX],
            lost_before: 9,
            marks: vec![pb::Mark {
                flow_id: 5,
                value: 1.5,
                args: vec![],
            }],
            palette: vec![0x51, 0x3f4, 1 << 40],
            texts: Vec::new(),
            text_events: Vec::new(),
        }
    }

    /// What the view reads, as prost's struct.
    fn as_prost(view: &BatchView) -> pb::EventBatch {
        pb::EventBatch {
            tid: view.tid,
            base_ticks: view.base_ticks,
            tick_deltas: view.tick_deltas.iter().map(unzigzag).collect(),
            codes: view.codes.iter().collect(),
            lines: view.lines.iter().map(|l| l as u32).collect(),
            lost_before: view.lost_before,
            marks: view.marks.clone(),
            palette: view.palette.iter().collect(),
            texts: Vec::new(),
            text_events: Vec::new(),
        }
    }

    /// Plain events of a few kinds with ticks that go forward, jump back
    /// and wrap; lines of every size.
    fn plain_events(n: usize, seed: u64) -> Vec<RawEvent> {
        let mut rand = crate::test_rand::XorShift::new(seed);
        let mut ticks = 1u64 << 40;
        (0..n)
            .map(|i| {
                let x = rand.next();
                ticks = match x % 50 {
                    0 => ticks.wrapping_sub(x % 1000),
                    1 => u64::MAX - (x % 3),
                    _ => ticks.wrapping_add(x % (1 << (x % 40))),
                };
                let kinds = [
                    Kind::Call,
                    Kind::Return,
                    Kind::CCall,
                    Kind::CReturn,
                    Kind::Exception,
                    Kind::Line,
                ];
                let kind = kinds[(x >> 8) as usize % kinds.len()];
                let line = if kind == Kind::Line {
                    (x >> 16) as u32 >> (x % 32)
                } else {
                    0
                };
                RawEvent::new(
                    ticks,
                    FunctionId((x >> 3) as u32 % (1 << (i % 28 + 1))),
                    kind,
                    line,
                )
            })
            .collect()
    }

    #[test]
    fn the_hand_written_batch_is_byte_for_byte_prosts() {
        // One encoder for every batch, as the writer keeps one.
        let mut frames = PlainFrames::new();
        let mut with_palette = 0;
        for seed in 0..200u64 {
            for n in [0, 1, 2, 7, 100, 3000] {
                let seed = seed * 7919 + n as u64;
                // Half of them skewed, so that a palette is used.
                let events = if seed % 2 == 0 {
                    plain_events(n, seed)
                } else {
                    skewed_events(n, seed)
                };
                let (tid, lost) =
                    [(0, 0), (1, 0), (12345, 7), (u64::MAX, u64::MAX)][seed as usize % 4];
                let mut expected = Vec::new();
                encode_frame(
                    crate::wire::batch_body(tid, &events, lost, Vec::new()),
                    &mut expected,
                );
                let mut got = vec![0xAA];
                assert!(frames.encode(tid, &events, lost, &mut got));
                assert_eq!(&got[1..], &expected[..], "seed {seed}, {n} events");
                let (_, used) = varint(&expected).unwrap();
                with_palette +=
                    usize::from(!parse_frame(&expected[used..]).unwrap().palette.is_empty());
            }
        }
        assert!(with_palette > 100, "{with_palette} batches used a palette");
    }

    /// `plain_events` with the functions of a real program's batch: a few
    /// of them, met late (ids of two bytes and more once shifted).
    fn skewed_events(n: usize, seed: u64) -> Vec<RawEvent> {
        plain_events(n, seed)
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let hot = [300, 301, 9000, 5, 77_777][(e.ticks as usize ^ i) % 5];
                let function = if i % 17 == 0 { e.function().0 } else { hot };
                RawEvent::new(e.ticks, FunctionId(function), e.kind().unwrap(), e.line)
            })
            .collect()
    }

    #[test]
    fn a_palette_makes_a_real_batch_smaller_and_reads_back() {
        let events = skewed_events(16 * 1024, 11);
        let mut framed = Vec::new();
        assert!(PlainFrames::new().encode(3, &events, 0, &mut framed));
        let (len, used) = varint(&framed).unwrap();
        let view = parse_frame(&framed[used..]).expect("prost's layout");
        assert_eq!(len as usize + used, framed.len());
        let palette: Vec<u64> = view.palette.iter().collect();
        assert!(
            !palette.is_empty() && palette.len() < 1000,
            "{}",
            palette.len()
        );
        let codes: Vec<u64> = view.codes.iter().map(|i| palette[i as usize]).collect();
        let expected: Vec<u64> = events.iter().map(|e| u64::from(e.code)).collect();
        assert_eq!(codes, expected);
        // The codes take 2-3 bytes; the ranks of the hot ones (16 events
        // in 17), one, and the palette a few bytes per distinct code.
        let len = |values: &mut dyn Iterator<Item = u64>| -> usize {
            values.map(prost::encoding::encoded_len_varint).sum()
        };
        let raw = len(&mut expected.iter().copied());
        let ranked = len(&mut view.codes.iter()) + len(&mut palette.iter().copied());
        assert!(
            ranked * 10 < raw * 6,
            "{ranked} bytes with the palette, {raw} without"
        );
    }

    /// After a batch whose codes took more than a byte, the next batch's
    /// codes are numbered in the same pass as its deltas (and each event's
    /// number kept after a batch of more than 128 codes): every way that
    /// can go (the palette pays, it does not, the codes take one byte
    /// after all, more or fewer than 128 codes) writes prost's bytes, and
    /// each batch sets the numbering of the next.
    #[test]
    fn codes_numbered_in_the_pass_write_the_same_bytes() {
        let calls = |n: usize, functions: u64, first: u32| -> Vec<RawEvent> {
            (0..n as u64)
                .map(|i| {
                    let function = FunctionId(first + (i % functions) as u32);
                    RawEvent::new(100 + i * 30, function, Kind::Call, 0)
                })
                .collect()
        };
        let one_byte = calls(400, 3, 1);
        // Every code distinct and long: a palette would only add to them.
        let all_distinct = calls(300, 300, 100_000);
        // 200 codes of three bytes, each met 25 times: ranked by frequency.
        let many = calls(5_000, 200, 100_000);
        use Numbering::{Events, Numbers, Off};
        let batches = [
            (skewed_events(500, 1), Numbers),
            (skewed_events(500, 2), Numbers),
            (all_distinct.clone(), Events),
            (many.clone(), Events),
            (many, Events),
            (one_byte.clone(), Off),
            (skewed_events(500, 3), Numbers),
            (all_distinct, Events),
            (skewed_events(500, 4), Numbers),
            (one_byte.clone(), Off),
            (one_byte, Off),
        ];
        let mut frames = PlainFrames::new();
        let mut with_palette = 0;
        for (i, (events, next)) in batches.iter().enumerate() {
            let mut expected = Vec::new();
            encode_frame(
                crate::wire::batch_body(5, events, 0, Vec::new()),
                &mut expected,
            );
            let mut got = Vec::new();
            assert!(frames.encode(5, events, 0, &mut got));
            assert_eq!(got, expected, "batch {i}");
            assert_eq!(frames.numbering, *next, "after batch {i}");
            let (_, used) = varint(&got).unwrap();
            with_palette += usize::from(!parse_frame(&got[used..]).unwrap().palette.is_empty());
        }
        // The skewed batches and those of 200 codes.
        assert_eq!(with_palette, 6);
    }

    #[test]
    fn a_batch_with_a_user_event_is_left_to_prost() {
        let marks = [
            Kind::SpanBegin,
            Kind::SpanEnd,
            Kind::Instant,
            Kind::Counter,
            Kind::FlowOut,
            Kind::FlowIn,
        ];
        for kind in marks {
            assert!(kind.is_mark());
            for at in [0, 5, 10] {
                let mut events = plain_events(10, 3);
                events.insert(at, RawEvent::new(5, FunctionId(1), kind, 0));
                let mut out = vec![1, 2];
                assert!(
                    !PlainFrames::new().encode(1, &events, 0, &mut out),
                    "{kind:?}"
                );
                assert_eq!(out, [1, 2]);
            }
        }
    }

    #[test]
    fn reads_what_prost_writes() {
        let mut bytes = Vec::new();
        encode_frame(Body::Batch(batch()), &mut bytes);
        let (len, used) = varint(&bytes).unwrap();
        let frame = &bytes[used..];
        assert_eq!(len as usize, frame.len());
        let view = parse_frame(frame).expect("prost's layout");
        assert_eq!(view.tick_deltas.len(), 6);
        assert_eq!(as_prost(&view), batch());
        assert_eq!(decode_frame(frame), Ok(Some(Body::Batch(batch()))));
    }

    #[test]
    fn unusual_layouts_are_left_to_prost() {
        let packed = batch().encode_to_vec();
        let frame = |body: &[u8]| {
            let mut out = vec![FRAME_BATCH];
            prost::encoding::encode_varint(body.len() as u64, &mut out);
            out.extend_from_slice(body);
            out
        };
        // Codes given twice (prost appends), an unknown field, an unpacked
        // value, a torn varint, a bad tenth byte, a second body.
        let mut twice = packed.clone();
        twice.extend_from_slice(&[CODES, 1, 5]);
        let mut unknown = packed.clone();
        unknown.extend_from_slice(&[0x40, 1]);
        let mut unpacked = packed.clone();
        unpacked.extend_from_slice(&[0x20, 1]);
        let cases = [
            frame(&twice),
            frame(&unknown),
            frame(&unpacked),
            frame(&[CODES, 1, 0x80]),
            frame(&[
                CODES, 10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2,
            ]),
            [frame(&packed), frame(&packed)].concat(),
        ];
        for case in &cases {
            assert!(parse_frame(case).is_none(), "{case:?}");
        }
        // The tenth byte may be 1, as prost allows.
        let top = frame(&[
            CODES, 10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1,
        ]);
        let view = parse_frame(&top).unwrap();
        assert_eq!(view.codes.iter().collect::<Vec<_>>(), vec![1 << 63]);
        assert_eq!(
            decode_frame(&top)
                .map(|b| matches!(b, Some(Body::Batch(b)) if b.codes == vec![1 << 63])),
            Ok(true)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Any batch prost writes, then damaged (bytes changed, cut or
        /// added): whenever the hand parser takes the frame, prost reads it
        /// too, and the same.
        #[test]
        fn the_hand_parser_agrees_with_prost_on_damaged_frames(
            tid in proptest::prelude::any::<u64>(),
            deltas in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..20),
            codes in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..20),
            lines in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..4),
            marks in 0usize..3,
            palette in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..5),
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0u8..4), 0..4),
        ) {
            let batch = pb::EventBatch {
                tid,
                base_ticks: tid.rotate_left(17),
                tick_deltas: deltas,
                codes,
                lines,
                lost_before: tid % 3,
                marks: vec![pb::Mark { flow_id: tid, value: 0.5, args: vec![] }; marks],
                palette,
                texts: Vec::new(),
                text_events: Vec::new(),
            };
            let mut frame = pb::Frame { body: Some(Body::Batch(batch)) }.encode_to_vec();
            for (at, byte, how) in edits {
                let at = at % (frame.len() + 1);
                match how {
                    0 => frame.insert(at, byte),
                    1 => frame.truncate(at),
                    _ if at < frame.len() => frame[at] = byte,
                    _ => {}
                }
            }
            if let Some(view) = parse_frame(&frame) {
                proptest::prop_assert_eq!(decode_frame(&frame), Ok(Some(Body::Batch(as_prost(&view)))));
            }
        }
    }

    /// The packed field's values as prost reads them: `None` if one is
    /// malformed or unfinished.
    fn prost_values(mut field: &[u8]) -> Option<Vec<u64>> {
        let mut values = Vec::new();
        while !field.is_empty() {
            values.push(prost::encoding::decode_varint(&mut field).ok()?);
        }
        Some(values)
    }

    /// The word-at-a-time check and reader agree with prost on fields of
    /// varints of every length, damaged so that runs of continuation bytes
    /// of 8 to 11 cross the words' edges, and tenth bytes too large.
    #[test]
    fn packed_fields_read_as_prost_reads_them() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut taken, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut field = Vec::new();
            for _ in 0..next() % 12 {
                // Mostly 1-2 byte values, as real deltas and codes are.
                let bits = [7, 7, 14, 14, 21, 35, 56, 63, 64][next() as usize % 9];
                let value = next() >> (64 - bits);
                prost::encoding::encode_varint(value, &mut field);
            }
            match round % 4 {
                // A run of continuation bytes somewhere.
                1 if !field.is_empty() => {
                    let at = next() as usize % field.len();
                    let run = 8 + next() as usize % 4;
                    for i in at..(at + run).min(field.len()) {
                        field[i] |= 0x80;
                    }
                }
                // A tenth byte holding more than the top bit.
                2 => {
                    field.extend_from_slice(&[0xff; 9]);
                    field.push(next() as u8 & 0x7f);
                }
                3 if !field.is_empty() => {
                    let at = next() as usize % field.len();
                    field[at] ^= 0x80;
                }
                _ => {}
            }
            let expected = prost_values(&field);
            let got = Varints::new(&field).map(|v| {
                assert_eq!(v.len(), v.iter().count());
                v.iter().collect::<Vec<_>>()
            });
            assert_eq!(got, expected, "{field:02x?}");
            match got {
                Some(_) => taken += 1,
                None => refused += 1,
            }
        }
        assert!(taken > 5_000 && refused > 5_000, "{taken} {refused}");
    }

    #[test]
    fn every_truncation_agrees_with_prost() {
        let mut bytes = Vec::new();
        encode_frame(Body::Batch(batch()), &mut bytes);
        let (_, used) = varint(&bytes).unwrap();
        let body = &bytes[used + 2..];
        for cut in 0..body.len() {
            let mut frame = vec![FRAME_BATCH];
            prost::encoding::encode_varint(cut as u64, &mut frame);
            frame.extend_from_slice(&body[..cut]);
            let prost = decode_frame(&frame);
            if let Some(view) = parse_frame(&frame) {
                assert_eq!(
                    prost,
                    Ok(Some(Body::Batch(as_prost(&view)))),
                    "cut at {cut}"
                );
            }
        }
    }
}
