//! A batch's palette: its distinct event codes, listed once, so that the
//! wire carries each event's index into it instead of its code.
//!
//! A code is `function id << 4 | kind` (`event::encode_code`), so only the
//! first 8 functions a process meets get one-byte codes, and the rest two
//! or more: real programs streamed ~4 bytes per event, fib (whose hot
//! function comes first) 3. Within one batch a few codes make most events.
//! Indexes below 128 take one byte: a batch with at most 128 distinct codes
//! (most are) gets one byte per event whatever functions they name; one
//! with more lists its codes from the most to the least frequent, so that
//! the 128 most frequent take one byte. The palette costs a few bytes per
//! distinct code; a batch goes without when that would not leave it
//! smaller.

use prost::encoding::encoded_len_varint as varint_len;

/// Indexes below this take one byte.
const ONE_BYTE: usize = 1 << 7;

/// Numbers the codes of one batch and ranks them. Reused from batch to
/// batch (the writer's `batch::PlainFrames` keeps one), so that a batch
/// allocates nothing once its vectors have grown to a batch's size.
///
/// Each distinct code gets a number in the order first met: the table maps
/// a code to it once per event (`add`), and `ranks` reads each event's rank
/// through that number. Nothing is counted per event: with at most 128
/// distinct codes a code's rank is its number, and only beyond that does
/// `rank` count the numbers (a store per event into the same few counters
/// waits on the one before; the loads and compares of `add` do not).
#[derive(Debug)]
pub struct Palette {
    /// Open addressing, linear probing; a power of two long, at most half
    /// full. A slot is in use when its `stamp` is the batch's.
    slots: Vec<Slot>,
    /// 32 - log2(slots.len()): a code's home slot is its hash's top bits.
    shift: u32,
    /// The current batch's stamp (never 0, the stamp of an unused slot).
    stamp: u32,
    /// By number (order first met): each distinct code.
    codes: Vec<u32>,
    /// Each added event's code's number.
    seen: Vec<u32>,
    /// Events added or numbered since `clear`.
    events: usize,
    /// `rank`'s counts by number, in four sets (see there).
    counts: Vec<[u32; 4]>,
    /// Set by `rank`, for more than 128 codes: the numbers by rank, and
    /// the rank by number (both empty: a code's rank is its number).
    by_rank: Vec<u32>,
    rank_of: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    code: u32,
    stamp: u32,
    /// The code's number.
    number: u32,
}

/// The sizes `Palette::rank` weighs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranked {
    /// The packed palette: each distinct code, by rank.
    pub palette_len: usize,
    /// The packed codes field holding ranks instead of codes.
    pub ranks_len: usize,
}

impl Default for Palette {
    fn default() -> Self {
        Palette::new()
    }
}

impl Palette {
    const FIRST_SLOTS: usize = 1 << 10;

    /// An empty palette.
    pub fn new() -> Self {
        Palette {
            slots: vec![Slot::default(); Self::FIRST_SLOTS],
            shift: 32 - Self::FIRST_SLOTS.trailing_zeros(),
            stamp: 1,
            codes: Vec::new(),
            seen: Vec::new(),
            events: 0,
            counts: Vec::new(),
            by_rank: Vec::new(),
            rank_of: Vec::new(),
        }
    }

    /// Forgets the previous batch's codes, ready for `events` more.
    pub fn clear(&mut self, events: usize) {
        self.codes.clear();
        self.seen.clear();
        self.seen.reserve(events);
        self.events = 0;
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Once in 2^32 batches: no stale slot may look in use.
            self.slots.fill(Slot::default());
            self.stamp = 1;
        }
    }

    /// Adds one event's code; returns its number (see `number`).
    #[inline]
    pub fn add(&mut self, code: u32) -> u32 {
        let number = self.number(code);
        self.seen.push(number);
        number
    }

    /// Numbers one event's code (in the order first met) and returns its
    /// number, without keeping which event had it: where a batch has at
    /// most 128 codes (`ranks_are_numbers`), the numbers are the ranks, and
    /// `ranks` is not needed.
    #[inline]
    pub fn number(&mut self, code: u32) -> u32 {
        self.events += 1;
        self.number_of(code)
    }

    /// True when each code's rank is its number: at most 128 codes.
    pub fn ranks_are_numbers(&self) -> bool {
        self.codes.len() <= ONE_BYTE
    }

    /// Ranks the added codes and returns the sizes of the palette and of
    /// the ranks. Up to 128 codes, in the order first met (each takes one
    /// byte); beyond, from the most to the least frequent (then the smaller
    /// code first), counted over the events, which must all have come
    /// through `add` then.
    pub fn rank(&mut self) -> Ranked {
        self.by_rank.clear();
        self.rank_of.clear();
        let codes = &self.codes;
        let palette_len = codes.iter().map(|&c| varint_len(u64::from(c))).sum();
        if codes.len() <= ONE_BYTE {
            return Ranked {
                palette_len,
                ranks_len: self.events,
            };
        }
        debug_assert_eq!(self.seen.len(), self.events, "events numbered, not added");
        // Four sets of counters, so that a run of one code does not make
        // each increment wait for the one before.
        let counts = &mut self.counts;
        counts.clear();
        counts.resize(codes.len(), [0; 4]);
        for (i, &n) in self.seen.iter().enumerate() {
            counts[n as usize][i & 3] += 1;
        }
        let count = |n: u32| counts[n as usize].iter().sum::<u32>();
        self.by_rank.extend(0..codes.len() as u32);
        self.by_rank
            .sort_unstable_by_key(|&n| (std::cmp::Reverse(count(n)), codes[n as usize]));
        self.rank_of.resize(codes.len(), 0);
        let mut ranks_len = 0;
        for (rank, &n) in self.by_rank.iter().enumerate() {
            self.rank_of[n as usize] = rank as u32;
            ranks_len += count(n) as usize * varint_len(rank as u64);
        }
        Ranked {
            palette_len,
            ranks_len,
        }
    }

    /// Ranks the added codes; their sizes when the palette and the ranks
    /// take fewer bytes than the codes themselves (`raw_len`, the length
    /// of their packed field's contents), `None` when they do not.
    pub fn rank_if_smaller(&mut self, raw_len: usize) -> Option<Ranked> {
        let ranked = self.rank();
        let packed = 1 + varint_len(ranked.palette_len as u64) + ranked.palette_len;
        (packed + ranked.ranks_len < raw_len).then_some(ranked)
    }

    /// Each added event's rank, in the order added (after `rank`).
    #[inline]
    pub fn ranks(&self) -> impl Iterator<Item = u32> + '_ {
        let by_number = self.rank_of.is_empty();
        self.seen.iter().map(move |&n| {
            if by_number {
                n
            } else {
                self.rank_of[n as usize]
            }
        })
    }

    /// The distinct codes, by rank (after `rank`).
    pub fn codes(&self) -> impl Iterator<Item = u32> + '_ {
        let by_number = self.by_rank.is_empty();
        (0..self.codes.len()).map(move |rank| {
            if by_number {
                self.codes[rank]
            } else {
                self.codes[self.by_rank[rank] as usize]
            }
        })
    }

    /// Number of distinct codes added.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// True when nothing was added since `clear`.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    #[inline]
    fn home(&self, code: u32) -> usize {
        // Fibonacci hashing: codes differ mostly in their middle bits (the
        // function id above the kind).
        (code.wrapping_mul(0x9E37_79B9) >> self.shift) as usize
    }

    /// The code's number, given to it here if it is new.
    #[inline]
    fn number_of(&mut self, code: u32) -> u32 {
        let mask = self.slots.len() - 1;
        let mut i = self.home(code);
        loop {
            let slot = &self.slots[i];
            if slot.code == code && slot.stamp == self.stamp {
                return slot.number;
            }
            if slot.stamp != self.stamp {
                return self.insert(i, code);
            }
            i = (i + 1) & mask;
        }
    }

    /// Enters a new code in the free slot `i`.
    #[cold]
    fn insert(&mut self, i: usize, code: u32) -> u32 {
        let number = self.codes.len() as u32;
        self.slots[i] = Slot {
            code,
            stamp: self.stamp,
            number,
        };
        self.codes.push(code);
        if self.codes.len() * 2 > self.slots.len() {
            self.grow();
        }
        number
    }

    /// Doubles the table and enters the batch's codes again.
    #[cold]
    fn grow(&mut self) {
        self.slots = vec![Slot::default(); self.slots.len() * 2];
        self.shift -= 1;
        let mask = self.slots.len() - 1;
        for (number, &code) in self.codes.iter().enumerate() {
            let mut i = self.home(code);
            while self.slots[i].stamp == self.stamp {
                i = (i + 1) & mask;
            }
            self.slots[i] = Slot {
                code,
                stamp: self.stamp,
                number: number as u32,
            };
        }
    }
}

/// Replaces `codes` by their ranks when a palette makes the batch smaller,
/// and returns that palette (empty otherwise, `codes` untouched): the
/// batches that prost encodes (`wire::batch_body`: those with user events
/// or `log_args` texts) get the palette that `batch::PlainFrames`
/// gives the others.
pub fn rank_codes(codes: &mut [u64]) -> Vec<u64> {
    let raw_len: usize = codes.iter().map(|&c| varint_len(c)).sum();
    if raw_len <= codes.len() {
        // Every code takes one byte already.
        return Vec::new();
    }
    let mut palette = Palette::new();
    palette.clear(codes.len());
    // Codes come from `RawEvent::code`, a u32.
    for &code in codes.iter() {
        palette.add(code as u32);
    }
    if palette.rank_if_smaller(raw_len).is_none() {
        return Vec::new();
    }
    for (code, rank) in codes.iter_mut().zip(palette.ranks()) {
        *code = u64::from(rank);
    }
    palette.codes().map(u64::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_128_codes_keep_the_order_first_met() {
        let mut palette = Palette::new();
        for code in [0x52, 0x21, 0x30, 0x21, 0x30, 0x30, 0x40] {
            palette.add(code);
        }
        let ranked = palette.rank();
        assert_eq!(
            palette.codes().collect::<Vec<_>>(),
            [0x52, 0x21, 0x30, 0x40]
        );
        assert_eq!(palette.ranks().collect::<Vec<_>>(), [0, 1, 2, 1, 2, 2, 3]);
        assert_eq!(ranked.ranks_len, 7);
    }

    #[test]
    fn beyond_128_codes_the_most_frequent_come_first() {
        let mut palette = Palette::new();
        // 200 codes once each, then the last one met 50 more times and the
        // 100th 10 more times.
        let codes: Vec<u32> = (0..200).map(|i| 0x1000 + (i << 4)).collect();
        let mut added: Vec<u32> = codes.clone();
        added.extend(std::iter::repeat_n(codes[199], 50));
        added.extend(std::iter::repeat_n(codes[99], 10));
        for &code in &added {
            palette.add(code);
        }
        let ranked = palette.rank();
        let by_rank: Vec<u32> = palette.codes().collect();
        assert_eq!(by_rank[..3], [codes[199], codes[99], codes[0]]);
        let ranks: Vec<u32> = palette.ranks().collect();
        assert!(ranks
            .iter()
            .zip(&added)
            .all(|(&r, &c)| by_rank[r as usize] == c));
        // 128 ranks of one byte (the two hot codes among them), 72 of two.
        assert_eq!(ranked.ranks_len, added.len() + 72);
    }

    #[test]
    fn a_batch_forgets_the_previous_one_and_grows_as_needed() {
        let mut palette = Palette::new();
        for round in 0..3u32 {
            palette.clear(0);
            // Enough distinct codes to grow the table twice in round 0.
            let n = 5_000 - round * 2_000;
            for code in 0..n {
                for _ in 0..=(code % 3) {
                    palette.add(code << 4 | round);
                }
            }
            let ranked = palette.rank();
            assert_eq!(palette.len() as u32, n);
            let codes: Vec<u32> = palette.codes().collect();
            assert!(
                codes.iter().all(|c| c & 0xf == round),
                "a code from another batch"
            );
            // Each event's rank leads back to its code.
            let mut counted =
                (0..n).flat_map(|code| vec![code << 4 | round; code as usize % 3 + 1]);
            for rank in palette.ranks() {
                assert_eq!(codes[rank as usize], counted.next().unwrap());
            }
            assert_eq!(counted.next(), None);
            // Counts 3, then 2, then 1: the thirds in that order.
            assert_eq!(codes[0] >> 4, 2);
            assert_eq!(codes[n as usize - 1] >> 4, (n - 1) / 3 * 3);
            assert!(ranked.ranks_len > 0 && ranked.palette_len > 0);
        }
    }

    #[test]
    fn the_stamp_wrapping_around_leaves_no_stale_code() {
        let mut palette = Palette::new();
        palette.stamp = u32::MAX - 1;
        palette.add(7);
        palette.clear(0); // u32::MAX
        palette.add(8);
        palette.clear(0); // wraps: slots reset, stamp 1
        palette.add(9);
        palette.rank();
        assert_eq!(palette.codes().collect::<Vec<_>>(), [9]);
        palette.clear(0);
        assert!(palette.is_empty());
    }

    #[test]
    fn rank_codes_keeps_a_batch_that_a_palette_would_grow() {
        // Few events, each code once: the palette costs more than it saves.
        let mut codes = vec![0x1230, 0x4561, 0x7890];
        assert!(rank_codes(&mut codes).is_empty());
        assert_eq!(codes, [0x1230, 0x4561, 0x7890]);
        // Two codes of two bytes, many times: ranks of one byte.
        let mut codes: Vec<u64> = (0..100).map(|i| [0x1230, 0x1231][i % 2]).collect();
        let palette = rank_codes(&mut codes);
        assert_eq!(palette, [0x1230, 0x1231]);
        assert!(codes.iter().enumerate().all(|(i, &r)| r == (i % 2) as u64));
    }
}
