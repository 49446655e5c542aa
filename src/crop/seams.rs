//! The seam scan behind [`super::inset_rects`]: for every boundary between two columns (or two rows) of
//! an image, which of its pixels lie on a sharp, straight colour step, as prefix counts (how much of any
//! span is seam, in O(1)) and the longest run along it. It runs on every row a table stores, so it
//! works one image line at a time on contiguous buffers the compiler vectorises, and keeps counts in
//! 16 bits (the search never sees an image over 1024 pixels a side).

use image::RgbImage;

/// Colour step (summed over R, G, B) below which no seam is seen.
const MIN_STEP: u16 = 24;
/// Pixels of a seam that may be missing (where the two photos happen to match) without breaking it.
const MAX_GAP: i32 = 3;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Direction {
    /// Vertical seams: boundaries between columns, running down the rows.
    Columns,
    /// Horizontal seams: boundaries between rows, running along the columns.
    Rows,
}

/// The longest run of seam pixels along one boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Run {
    pub position: u32,
    pub start: u32,
    pub end: u32,
}

impl Run {
    pub fn len(&self) -> u32 {
        self.end - self.start
    }
}

/// Seam pixels along every boundary of one direction.
pub(super) struct Seams {
    /// Prefix counts of seam pixels: the count before pixel `i` along boundary `b` is at
    /// `b * position_stride + i * along_stride` (laid out in the order the scan wrote them).
    prefix: Vec<u16>,
    position_stride: usize,
    along_stride: usize,
    /// One per boundary position, 0..=extent across (the image's own edges never hold a seam).
    pub runs: Vec<Run>,
}

impl Seams {
    /// A seam pixel is a sharp local maximum of the colour step across boundaries, much stronger than
    /// its weaker neighbour; marked one boundary either side too, for resampled or JPEG-softened seams.
    /// Runs shorter than `min_run` × the boundaries' length are not wanted: lines with too few seam
    /// pixels for one are not scanned for runs (their run is empty).
    /// Compiled for AVX-512 and AVX2 as well as the x86-64 baseline, picked at run time like the
    /// executor's kernels: the per-pixel passes vectorise across a line.
    pub fn find(image: &RgbImage, direction: Direction, min_run: f32) -> Seams {
        let (width, height) = (image.width() as usize, image.height() as usize);
        debug_assert!(width.max(height) < u16::MAX as usize, "counts are 16-bit");
        #[inline(always)]
        fn body(raw: &[u8], width: usize, height: usize, direction: Direction, min_run: f32) -> Seams {
            match direction {
                Direction::Columns => Seams::columns(raw, width, height, min_run),
                Direction::Rows => Seams::rows(raw, width, height, min_run),
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            use crate::cpu::{isa, Isa};
            /// # Safety
            /// The CPU has AVX-512 F and VL, AVX2 and FMA (`Isa::Avx512`).
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn avx512(raw: &[u8], width: usize, height: usize, direction: Direction, min_run: f32) -> Seams {
                body(raw, width, height, direction, min_run)
            }
            /// # Safety
            /// The CPU has AVX2 and FMA (`Isa::Avx2Fma` or wider).
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(raw: &[u8], width: usize, height: usize, direction: Direction, min_run: f32) -> Seams {
                body(raw, width, height, direction, min_run)
            }
            match isa() {
                // SAFETY: the CPU has these features (checked by `isa`).
                Isa::Avx512 => return unsafe { avx512(image.as_raw(), width, height, direction, min_run) },
                // SAFETY: as above.
                Isa::Avx2Fma => return unsafe { avx2(image.as_raw(), width, height, direction, min_run) },
                Isa::Baseline => {}
            }
        }
        body(image.as_raw(), width, height, direction, min_run)
    }

    /// Vertical seams, one image row at a time: each row gives every boundary's next pixel, so the
    /// prefix counts of all boundaries advance together.
    #[inline(always)]
    fn columns(raw: &[u8], width: usize, height: usize, min_run: f32) -> Seams {
        let across = width + 1;
        let mut prefix = vec![0u16; across * (height + 1)];
        let (mut step, mut sharp, mut seam) = (vec![0u16; across], vec![0u8; across], vec![0u8; across]);
        // bits[(y / 64) * across + b], bit y % 64: the seam flags of boundary b as bit strings, written a
        // row at a time (contiguous across boundaries) and read a boundary at a time for its runs.
        let words = height.div_ceil(64);
        let mut bits = vec![0u64; words * across];
        for (y, row) in raw.chunks_exact(width * 3).enumerate() {
            steps(&row[..(width - 1) * 3], &row[3..], &mut step[1..width]);
            mark_sharp(&step, &mut sharp);
            widen(&sharp, &mut seam);
            let (done, next) = prefix.split_at_mut((y + 1) * across);
            for ((out, &before), &on) in next[..across].iter_mut().zip(&done[y * across..]).zip(&seam) {
                *out = before + on as u16;
            }
            for (word, &on) in bits[(y / 64) * across..][..across].iter_mut().zip(&seam) {
                *word |= (on as u64) << (y % 64);
            }
        }
        let totals = &prefix[height * across..];
        let mut line = vec![0u64; words];
        let runs = (0..across)
            .map(|b| {
                if !could_hold(totals[b], height, min_run) {
                    return Run { position: b as u32, ..Run::default() };
                }
                for (k, word) in line.iter_mut().enumerate() {
                    *word = bits[k * across + b];
                }
                longest_run(b as u32, &line)
            })
            .collect();
        Seams { prefix, position_stride: 1, along_stride: across, runs }
    }

    /// Horizontal seams, one boundary (a line along the image's width) at a time.
    #[inline(always)]
    fn rows(raw: &[u8], width: usize, height: usize, min_run: f32) -> Seams {
        let line = |y: usize| &raw[y * width * 3..(y + 1) * width * 3];
        // step[b * width + x]: the colour step between rows b - 1 and b; lines 0 and `height` stay 0.
        let mut step = vec![0u16; (height + 1) * width];
        for b in 1..height {
            steps(line(b - 1), line(b), &mut step[b * width..(b + 1) * width]);
        }
        let mut sharp = vec![0u8; (height + 1) * width];
        for b in 1..height {
            let (before, here, after) = (&step[(b - 1) * width..b * width], &step[b * width..(b + 1) * width], &step[(b + 1) * width..(b + 2) * width]);
            for (flag, ((&s, &l), &r)) in sharp[b * width..(b + 1) * width].iter_mut().zip(here.iter().zip(before).zip(after)) {
                *flag = is_sharp(s, l, r);
            }
        }
        let length = width + 1;
        let mut prefix = vec![0u16; (height + 1) * length];
        let mut seam = vec![0u8; width];
        let mut line = vec![0u64; width.div_ceil(64)];
        let mut runs = Vec::with_capacity(height + 1);
        for b in 0..=height {
            seam.fill(0);
            for d in b.saturating_sub(1)..=(b + 1).min(height) {
                for (out, &flag) in seam.iter_mut().zip(&sharp[d * width..(d + 1) * width]) {
                    *out |= flag;
                }
            }
            let sums = &mut prefix[b * length..(b + 1) * length];
            for i in 0..width {
                sums[i + 1] = sums[i] + seam[i] as u16;
            }
            if could_hold(sums[width], width, min_run) {
                for (word, flags) in line.iter_mut().zip(seam.chunks(64)) {
                    *word = flags.iter().enumerate().fold(0, |word, (i, &on)| word | (on as u64) << i);
                }
                runs.push(longest_run(b as u32, &line));
            } else {
                runs.push(Run { position: b as u32, ..Run::default() });
            }
        }
        Seams { prefix, position_stride: length, along_stride: 1, runs }
    }

    /// Fraction of boundary `position` between `from` and `to` that is seam, or 0 outside the image.
    pub fn coverage(&self, position: i64, from: u32, to: u32) -> f32 {
        if position < 0 || position as usize >= self.runs.len() {
            return 0.0;
        }
        let at = |i: u32| self.prefix[position as usize * self.position_stride + i as usize * self.along_stride];
        (at(to) - at(from)) as f32 / (to - from).max(1) as f32
    }

    /// How much more of the side is seam than of the lines 4 and 8 pixels beside it: high for a
    /// pasted edge, near zero inside texture (which is edgy everywhere) and on the 8-pixel block grid
    /// that strong JPEG compression draws.
    pub fn contrast(&self, position: u32, from: u32, to: u32) -> f32 {
        let p = position as i64;
        let beside = [-8, -4, 4, 8].map(|d| self.coverage(p + d, from, to)).into_iter().fold(0.0, f32::max);
        self.coverage(p, from, to) - beside
    }
}

/// The colour step between two equally long runs of RGB pixels, pixel by pixel, summed over R, G, B.
#[inline(always)]
fn steps(a: &[u8], b: &[u8], out: &mut [u16]) {
    for ((out, p), q) in out.iter_mut().zip(a.chunks_exact(3)).zip(b.chunks_exact(3)) {
        *out = p[0].abs_diff(q[0]) as u16 + p[1].abs_diff(q[1]) as u16 + p[2].abs_diff(q[2]) as u16;
    }
}

/// 1 where the step `s` is a sharp local maximum between its neighbours `l` and `r`.
#[inline(always)]
fn is_sharp(s: u16, l: u16, r: u16) -> u8 {
    ((s > MIN_STEP) & (s >= l) & (s >= r) & (s > 2 * l.min(r))) as u8
}

/// Sharp flags of one line of steps; the two ends (the image's edges) stay 0.
#[inline(always)]
fn mark_sharp(step: &[u16], sharp: &mut [u8]) {
    let n = step.len();
    for (flag, w) in sharp[1..n - 1].iter_mut().zip(step.windows(3)) {
        *flag = is_sharp(w[1], w[0], w[2]);
    }
}

/// Each flag ORed with its neighbours either side.
#[inline(always)]
fn widen(sharp: &[u8], seam: &mut [u8]) {
    let n = sharp.len();
    seam[0] = sharp[0] | sharp[1];
    seam[n - 1] = sharp[n - 2] | sharp[n - 1];
    for (out, w) in seam[1..n - 1].iter_mut().zip(sharp.windows(3)) {
        *out = w[0] | w[1] | w[2];
    }
}

/// Whether `count` seam pixels along a line `length` long could make a run of `min_run` × `length`:
/// a run's pixels are at most `MAX_GAP + 1` apart, so `n` of them span at most `(MAX_GAP + 1)(n − 1) + 1`.
fn could_hold(count: u16, length: usize, min_run: f32) -> bool {
    count > 0 && ((MAX_GAP + 1) * (count as i32 - 1) + 1) as f32 >= min_run * length as f32
}

/// The first longest run of set bits (bit `i % 64` of word `i / 64` is pixel `i` along the line), gaps
/// of up to `MAX_GAP` bridged: the gaps are filled with shifts, then the runs are found a word at a
/// time, so the cost follows the number of runs rather than of pixels.
fn longest_run(position: u32, bits: &[u64]) -> Run {
    let n = bits.len();
    // Bit i of `before(k, a)` is pixel i − a; of `after(k, c)`, pixel i + c.
    let before = |k: usize, a: u32| bits[k] << a | if k > 0 { bits[k - 1] >> (64 - a) } else { 0 };
    let after = |k: usize, c: u32| bits[k] >> c | if k + 1 < n { bits[k + 1] << (64 - c) } else { 0 };
    // A pixel in a gap of at most three has set pixels a before and c after it with a + c <= 4.
    const _: () = assert!(MAX_GAP == 3, "the gap filling below bridges exactly three pixels");
    let filled: Vec<u64> = (0..n)
        .map(|k| {
            let (b1, b2, b3) = (before(k, 1), before(k, 2), before(k, 3));
            let (a1, a2, a3) = (after(k, 1), after(k, 2), after(k, 3));
            bits[k] | b1 & (a1 | a2 | a3) | b2 & (a1 | a2) | b3 & a1
        })
        .collect();
    // The first position at or after `from` whose bit is `set`, or the end of the line.
    let next = |from: usize, set: bool| -> usize {
        let word = |k: usize| if set { filled[k] } else { !filled[k] };
        let mut k = from / 64;
        if k >= n {
            return n * 64;
        }
        let mut w = word(k) & (u64::MAX << (from % 64));
        while w == 0 {
            k += 1;
            if k == n {
                return n * 64;
            }
            w = word(k);
        }
        k * 64 + w.trailing_zeros() as usize
    };
    let mut best = Run { position, ..Run::default() };
    let mut from = 0;
    loop {
        let start = next(from, true);
        if start >= n * 64 {
            return best;
        }
        let end = next(start, false);
        if (end - start) as u32 > best.len() {
            best = Run { position, start: start as u32, end: end as u32 };
        }
        from = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest run as the definition reads: pixel by pixel, a run broken by a gap of more than
    /// `MAX_GAP` unset pixels, the first of equally long runs kept.
    fn longest_run_pixel_by_pixel(flags: &[bool]) -> (u32, u32) {
        let (mut best, mut start, mut last) = ((0, 0), 0, None::<u32>);
        for (i, &on) in (0u32..).zip(flags) {
            if on {
                if last.is_none_or(|last| i - last > MAX_GAP as u32 + 1) {
                    start = i;
                }
                last = Some(i);
                if i + 1 - start > best.1 - best.0 {
                    best = (start, i + 1);
                }
            }
        }
        best
    }

    #[test]
    fn runs_found_a_word_at_a_time_equal_the_pixel_by_pixel_definition() {
        let mut state = 12_345u32;
        for (length, density) in [(1usize, 128u32), (63, 40), (64, 200), (65, 90), (341, 60), (512, 150), (1024, 230), (700, 10)] {
            for _ in 0..50 {
                let flags: Vec<bool> = (0..length)
                    .map(|_| {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (state >> 24) < density
                    })
                    .collect();
                let mut bits = vec![0u64; length.div_ceil(64)];
                for (i, _) in flags.iter().enumerate().filter(|(_, &on)| on) {
                    bits[i / 64] |= 1 << (i % 64);
                }
                let run = longest_run(7, &bits);
                assert_eq!((run.position, (run.start, run.end)), (7, longest_run_pixel_by_pixel(&flags)), "{flags:?}");
            }
        }
    }

    #[test]
    fn lines_skipped_as_too_sparse_hold_no_run_that_long() {
        // Sparse random edges, and a striped picture with a pasted rectangle: every run of at least
        // `min_run` of the line is found with the skip as without it.
        let mut state = 99u32;
        let noise = RgbImage::from_fn(300, 200, |_, _| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let v = if (state >> 24) < 20 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        let pasted = RgbImage::from_fn(400, 300, |x, y| match (90..300).contains(&x) && (40..200).contains(&y) {
            true => image::Rgb([(60 + x / 4) as u8, (90 + y / 3) as u8, 140]),
            false => image::Rgb([170, 140 + (((x + 2 * y) / 20) % 2 * 60) as u8, 90]),
        });
        for image in [noise, pasted] {
            for direction in [Direction::Columns, Direction::Rows] {
                let length = match direction {
                    Direction::Columns => image.height(),
                    Direction::Rows => image.width(),
                } as f32;
                let (skipping, all) = (Seams::find(&image, direction, 0.15), Seams::find(&image, direction, 0.0));
                let long = |seams: &Seams| seams.runs.iter().filter(|r| r.len() as f32 >= 0.15 * length).copied().collect::<Vec<_>>();
                assert_eq!(long(&skipping), long(&all));
                assert!(all.runs.iter().any(|r| r.len() > 0));
            }
        }
    }
}
