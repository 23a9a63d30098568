//! A series' fitted history packed into 16 bits a point.
//!
//! At 100,000 series the history is most of what prescale keeps: a week of
//! 5-minute means is 8 KiB per series as `f32`. [`Packed`] keeps it in blocks of
//! [`BLOCK`] points that share an offset and a step, each point a 16-bit code:
//! the value is `offset + code × step`, where the step is the block's range over
//! 65,534, so a point is within 0.0008 % of its block's range of the value it
//! stands for (the models fit the week's shape; a millionth of a block's range
//! is far below any forecast error). A week of 5-minute means takes 4.3 KiB. The
//! newest, unfilled block stays as `f32` until it is full; gaps (`NAN`) keep a
//! code of their own.

use std::collections::VecDeque;

/// Points per block.
pub const BLOCK: usize = 64;

/// The code of a gap.
const GAP: u16 = u16::MAX;

/// The largest code of a value.
const TOP: f64 = (u16::MAX - 1) as f64;

/// [`BLOCK`] points as codes, with their offset and step.
#[derive(Debug, Clone)]
struct Block {
    offset: f64,
    step: f64,
    codes: [u16; BLOCK],
}

impl Block {
    fn pack(values: &[f32]) -> Self {
        let (lo, hi) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(f64::from(v)), hi.max(f64::from(v)))
            });
        let step = if hi > lo { (hi - lo) / TOP } else { 0.0 };
        let mut codes = [GAP; BLOCK];
        for (c, &v) in codes.iter_mut().zip(values) {
            if v.is_finite() {
                let v = f64::from(v);
                *c = if step > 0.0 {
                    ((v - lo) / step).round().clamp(0.0, TOP) as u16
                } else {
                    0
                };
            }
        }
        Self {
            offset: lo,
            step,
            codes,
        }
    }

    fn value(&self, i: usize) -> f64 {
        match self.codes[i] {
            GAP => f64::NAN,
            c => self.offset + f64::from(c) * self.step,
        }
    }
}

/// A bounded history of fitted points, oldest first, 16 bits a point.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    /// Full blocks, oldest first.
    blocks: VecDeque<Block>,
    /// Slots of the first block (or, while there is none, of the open block)
    /// that hold no point: dropped, or before the first point.
    skip: usize,
    /// The newest block, not yet full.
    open: Vec<f32>,
}

impl Packed {
    /// An empty history that will hold up to `cap` points (allocated up front, so
    /// it never grows past that).
    pub fn with_capacity(cap: usize) -> Self {
        Self::aligned(cap, 0)
    }

    /// As [`Packed::with_capacity`], the first point in slot `phase` of its block:
    /// with `phase` the absolute index of the first point modulo [`BLOCK`], the
    /// blocks fall on the absolute grid, so two histories of the same series
    /// started at different times pack the same points alike (replicas then fit
    /// the same values).
    pub fn aligned(cap: usize, phase: usize) -> Self {
        let phase = phase % BLOCK;
        let mut open = Vec::with_capacity(BLOCK);
        open.resize(phase, f32::NAN);
        Self {
            blocks: VecDeque::with_capacity(cap.div_ceil(BLOCK) + 1),
            skip: phase,
            open,
        }
    }

    /// The values packed and read back: what a history keeps of them.
    pub fn round_trip(values: &[f64]) -> Vec<f64> {
        let mut p = Self::with_capacity(values.len());
        for &v in values {
            p.push(v, usize::MAX);
        }
        p.to_vec()
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.blocks.len() * BLOCK + self.open.len() - self.skip
    }

    /// Whether no point is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a point (`NAN` for a gap), dropping the oldest beyond `cap`;
    /// returns whether a dropped point was observed (not a gap).
    pub fn push(&mut self, v: f64, cap: usize) -> bool {
        let mut dropped = false;
        if self.len() >= cap.max(1) {
            dropped = self.pop_front().is_some_and(f64::is_finite);
        }
        self.open.push(v as f32);
        if self.open.len() == BLOCK {
            self.blocks.push_back(Block::pack(&self.open));
            self.open.clear();
        }
        dropped
    }

    fn pop_front(&mut self) -> Option<f64> {
        if let Some(first) = self.blocks.front() {
            let v = first.value(self.skip);
            self.skip += 1;
            if self.skip == BLOCK {
                self.blocks.pop_front();
                self.skip = 0;
            }
            Some(v)
        } else {
            // Slots stay where they are, so the blocks stay on the grid.
            let v = self.open.get(self.skip).map(|&v| f64::from(v))?;
            self.skip += 1;
            Some(v)
        }
    }

    /// All points, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.points_from(self.skip)
    }

    /// The points from slot `from` on, counting the first block's slot 0 as 0:
    /// the blocks before it are stepped over, not decoded.
    fn points_from(&self, from: usize) -> impl Iterator<Item = f64> + '_ {
        let (first, at) = (from / BLOCK, from % BLOCK);
        let packed = self
            .blocks
            .iter()
            .enumerate()
            .skip(first)
            .flat_map(move |(b, block)| {
                let start = if b == first { at } else { 0 };
                (start..BLOCK).map(move |i| block.value(i))
            });
        let open_from = from.saturating_sub(self.blocks.len() * BLOCK);
        packed.chain(
            self.open[open_from.min(self.open.len())..]
                .iter()
                .map(|&v| f64::from(v)),
        )
    }

    /// All points, oldest first.
    pub fn to_vec(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(self.iter());
        out
    }

    /// The newest `n` points, oldest first (only their blocks decoded: the tracker
    /// asks for the newest few every step).
    pub fn newest(&self, n: usize) -> Vec<f64> {
        let len = self.len();
        self.points_from(self.skip + len.saturating_sub(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize) -> Vec<f64> {
        (0..n)
            .map(|t| 500.0 + 300.0 * (t as f64 * 0.05).sin() + ((t * 7919) % 13) as f64)
            .collect()
    }

    #[test]
    fn a_point_is_within_half_a_step_of_its_block_range() {
        let mut v = wave(1000);
        v[10] = f64::NAN;
        v[300..340].iter_mut().for_each(|x| *x = f64::NAN);
        v[700] = 1e9; // one spike widens its block's step, and only its block's
        let back = Packed::round_trip(&v);
        assert_eq!(back.len(), v.len());
        for (b, chunk) in v.chunks(BLOCK).enumerate() {
            let finite = chunk.iter().filter(|x| x.is_finite());
            let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
            let bound = if hi > lo { (hi - lo) / TOP } else { 0.0 };
            for (i, &x) in chunk.iter().enumerate() {
                let y = back[b * BLOCK + i];
                if x.is_nan() {
                    assert!(y.is_nan(), "a gap stays a gap at {}", b * BLOCK + i);
                } else {
                    // f32 first (the open block), then the code.
                    let tol = 0.5 * bound + x.abs() * 1e-7 + 1e-9;
                    assert!((x - y).abs() <= tol, "{x} vs {y} at {}", b * BLOCK + i);
                }
            }
        }
        // Away from the spike, the error is a millionth of the wave's range.
        assert!((v[100] - back[100]).abs() < 600.0 / 1e5);
        // A flat block is exact.
        let flat = Packed::round_trip(&[42.5; 200]);
        assert!(flat.iter().all(|&x| x == 42.5));
    }

    #[test]
    fn it_keeps_the_newest_cap_points_and_says_what_it_dropped() {
        let v = wave(500);
        let cap = 150;
        let mut p = Packed::with_capacity(cap);
        let mut dropped = 0;
        for (i, &x) in v.iter().enumerate() {
            let x = if i % 50 == 0 { f64::NAN } else { x };
            if p.push(x, cap) {
                dropped += 1;
            }
            assert_eq!(p.len(), (i + 1).min(cap));
            // The newest points, read from their own blocks, are the tail of all
            // of them, whatever the fill of the first and the open block.
            let all = p.to_vec();
            for n in [0, 1, 2, BLOCK - 1, BLOCK, BLOCK + 1, cap - 1, cap, cap + 1] {
                let tail = &all[all.len().saturating_sub(n)..];
                let got = p.newest(n);
                assert_eq!(got.len(), tail.len(), "newest({n}) after {i}");
                assert!(
                    got.iter()
                        .zip(tail)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "newest({n}) after {i}"
                );
            }
        }
        // 350 points dropped, of which 7 were gaps (0, 50, ..., 300).
        assert_eq!(dropped, 350 - 7);
        let all = p.to_vec();
        assert_eq!(all.len(), cap);
        for (k, &y) in all.iter().enumerate() {
            let i = 500 - cap + k;
            if i % 50 == 0 {
                assert!(y.is_nan());
            } else {
                assert!((y - v[i]).abs() < 1e-2, "{y} vs {} at {i}", v[i]);
            }
        }
        let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(p.newest(3)), bits(all[cap - 3..].to_vec()));
        assert_eq!(bits(p.newest(1000)), bits(all.clone()));
        // Never more blocks than the cap needs.
        assert!(p.blocks.len() <= cap.div_ceil(BLOCK) + 1);
    }

    #[test]
    fn histories_started_apart_pack_alike_on_the_grid() {
        let v = wave(600);
        let cap = 200;
        let start = 37;
        let mut a = Packed::aligned(cap, 0);
        let mut b = Packed::aligned(cap, start);
        for (i, &x) in v.iter().enumerate() {
            a.push(x, cap);
            if i >= start {
                b.push(x, cap);
            }
            if i >= start + cap + BLOCK {
                let (pa, pb) = (a.to_vec(), b.to_vec());
                assert_eq!(pa, pb, "at {i}");
            }
        }
        // Unaligned, the same points pack differently.
        let mut c = Packed::with_capacity(cap);
        v[start..].iter().for_each(|&x| {
            c.push(x, cap);
        });
        assert_ne!(c.to_vec(), a.to_vec());
        assert_eq!(b.len(), cap);
    }

    #[test]
    fn a_small_cap_works_inside_the_open_block() {
        let mut p = Packed::with_capacity(3);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            p.push(x, 3);
        }
        assert_eq!(p.to_vec(), vec![3.0, 4.0, 5.0]);
        assert!(!p.is_empty());
    }
}
