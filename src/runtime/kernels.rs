//! The native executor's kernels. Each hot loop is written once over slices, so the compiler can
//! vectorise it, and compiled three times — AVX-512, AVX2+FMA and the x86-64 baseline — with the
//! variant picked at run time: the `.so` ships to clusters whose CPUs we do not know, so it cannot be
//! built for one `target-cpu`.

use std::sync::OnceLock;

use super::quantized::Levels;

/// The widest instruction set this CPU offers, detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Baseline,
    Avx2Fma,
    Avx512,
}

/// Caps the kernels' instruction set, for running a node's path on another CPU: `avx2` runs what a CPU
/// without AVX-512 runs (int8 then falls back to f32), `baseline` the x86-64 baseline kernels. Read once,
/// with the CPU's own features; an unknown value is ignored with a line on stderr.
pub const MAX_ISA_VARIABLE: &str = "IMGFEAT_MAX_ISA";

pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = match std::env::var(MAX_ISA_VARIABLE).as_deref() {
            Err(_) | Ok("") | Ok("avx512") => Isa::Avx512,
            Ok("avx2") => Isa::Avx2Fma,
            Ok("baseline") => Isa::Baseline,
            Ok(other) => {
                eprintln!("imgfeat: {MAX_ISA_VARIABLE}={other:?} is not avx512, avx2 or baseline; ignored");
                Isa::Avx512
            }
        };
        detected().min(cap)
    })
}

fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        // Everything the AVX-512 variants are compiled with (`multiversion!`, `avx512`).
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2Fma;
        }
    }
    Isa::Baseline
}

/// `a·b + c`, fused where the CPU has FMA (where it has not, `f32::mul_add` would be a libm call).
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

struct Unfused;
impl MulAdd for Unfused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Defines `pub fn $name(args)` that runs `$body::<Fused>` under AVX-512 or AVX2+FMA when the CPU has
/// them, else `$body::<Unfused>` on the baseline instruction set.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<Fused>($($arg),*)
                }
                match isa() {
                    // SAFETY: the CPU has these features (checked by `isa`).
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2Fma => return unsafe { avx2($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            $body::<Unfused>($($arg),*)
        }
    };
}

/// What follows a convolution or matrix product before its result is stored: a per-channel bias and a
/// clamp (ReLU6 is a clamp to [0, 6]). Applying it while the block is still in cache saves a pass over
/// memory per fused op.
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue {
    /// One value per output channel, or empty.
    pub bias: Vec<f32>,
    pub low: f32,
    pub high: f32,
}

impl Epilogue {
    pub fn new(channels: usize) -> Epilogue {
        Epilogue { bias: vec![0.0; channels], low: f32::NEG_INFINITY, high: f32::INFINITY }
    }
}

/// Which dimension of a row-major block the epilogue's channels run along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelsAlong {
    Rows,
    Columns,
}

multiversion! {
    /// Applies `epilogue` to columns `columns` of the `rows`-row block starting at `block[0]` with row
    /// stride `row_stride`; `channel_offset` is the block's first channel.
    pub fn apply_epilogue(
        block: &mut [f32], rows: usize, row_stride: usize, columns: std::ops::Range<usize>,
        epilogue: &Epilogue, along: ChannelsAlong,
    ) => apply_epilogue_body
}

#[inline(always)]
fn apply_epilogue_body<M: MulAdd>(
    block: &mut [f32],
    rows: usize,
    row_stride: usize,
    columns: std::ops::Range<usize>,
    epilogue: &Epilogue,
    along: ChannelsAlong,
) {
    let (low, high) = (epilogue.low, epilogue.high);
    for row in 0..rows {
        let values = &mut block[row * row_stride + columns.start..row * row_stride + columns.end];
        match along {
            ChannelsAlong::Rows => {
                let bias = epilogue.bias[row];
                for v in values.iter_mut() {
                    *v = (*v + bias).max(low).min(high);
                }
            }
            ChannelsAlong::Columns => {
                for (v, bias) in values.iter_mut().zip(&epilogue.bias[columns.clone()]) {
                    *v = (*v + bias).max(low).min(high);
                }
            }
        }
    }
}

/// Geometry of one 2-D convolution window sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub in_height: usize,
    pub in_width: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub kernel_height: usize,
    pub kernel_width: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl Window {
    /// The input rows output row `oy` reads, as (kernel row, input row) pairs.
    #[inline(always)]
    fn rows(&self, oy: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.kernel_height).filter_map(move |ky| {
            let iy = (oy * self.stride + ky).checked_sub(self.pad_top)?;
            (iy < self.in_height).then_some((ky, iy))
        })
    }

    /// The taps output pixel (oy, ox) uses, as (tap = ky·KW + kx, input pixel = iy·W + ix) pairs;
    /// taps over the zero padding are left out.
    #[inline(always)]
    fn taps(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.rows(oy).flat_map(move |(ky, iy)| {
            (0..self.kernel_width).filter_map(move |kx| {
                let ix = (ox * self.stride + kx).checked_sub(self.pad_left).filter(|&x| x < self.in_width)?;
                Some((ky * self.kernel_width + kx, iy * self.in_width + ix))
            })
        })
    }

    /// Calls `visit(tap, input pixel)` for the taps of output pixel (oy, ox), as [`Window::taps`]
    /// lists them. A window wholly inside the image (all but the border's) takes fixed offsets with
    /// no bounds checks: the tap iterator's checks cost more than the multiply-adds they guard.
    #[inline(always)]
    fn visit_taps(&self, oy: usize, ox: usize, mut visit: impl FnMut(usize, usize)) {
        let inside = |start: usize, pad: usize, kernel: usize, extent: usize| {
            start.checked_sub(pad).filter(|&first| first + kernel <= extent)
        };
        let top = inside(oy * self.stride, self.pad_top, self.kernel_height, self.in_height);
        let left = inside(ox * self.stride, self.pad_left, self.kernel_width, self.in_width);
        if let (Some(top), Some(left)) = (top, left) {
            for ky in 0..self.kernel_height {
                let row = (top + ky) * self.in_width + left;
                for kx in 0..self.kernel_width {
                    visit(ky * self.kernel_width + kx, row + kx);
                }
            }
        } else {
            for (tap, pixel) in self.taps(oy, ox) {
                visit(tap, pixel);
            }
        }
    }
}

/// Values per vector block of the depthwise kernels: one AVX-512 register, two AVX2 ones.
pub const LANES: usize = 16;

/// The tallest and widest kernel the depthwise kernels take (the lowering refuses larger ones).
pub const MAX_KERNEL_HEIGHT: usize = 8;

multiversion! {
    /// Depthwise convolution of channel-planar data (C×H×W in, C×OH×OW out), one channel at a time.
    /// The zero-padded input plane is split into stride×stride phase planes of one row pitch, so that
    /// every kernel tap reads one contiguous run: output (oy, ox), computed at flat position
    /// oy·pitch + ox, reads tap (ky, kx) at that position plus a fixed offset, and each block of 16
    /// outputs accumulates all its taps in registers. The columns past OW are computed and dropped,
    /// which costs less than short rows would. Output channel c starts at c·`out_channel_stride`,
    /// so that a band of rows can be written into a whole tensor.
    pub fn depthwise_planar(
        input: &[f32], weights: &[f32], epilogue: &Epilogue, output: &mut [f32], out_channel_stride: usize,
        window: &Window, scratch: &mut [f32],
    ) => depthwise_planar_body
}


/// Copies channel-interleaved `input` (the input of `window`, `channels` values a pixel) into
/// `padded`, the input of [`Window::padded`]: zeros wherever `window` reads past its input. A
/// depthwise convolution over it has no border pixels: on a 7x7 map with a 5x5 kernel, 40 of the
/// 49 pixels are border pixels, each computed alone.
pub fn pad_interleaved(input: &[f32], channels: usize, window: &Window, padded: &mut [f32]) {
    let p = window.padded();
    let row_len = p.in_width * channels;
    assert!(padded.len() >= p.in_height * row_len && input.len() >= window.in_height * window.in_width * channels);
    let left = (window.pad_left * channels).min(row_len);
    let copied = window.in_width.min(p.in_width - left / channels) * channels;
    for (py, out_row) in padded.chunks_exact_mut(row_len).take(p.in_height).enumerate() {
        match py.checked_sub(window.pad_top).filter(|&y| y < window.in_height) {
            None => out_row.fill(0.0),
            Some(y) => {
                out_row[..left].fill(0.0);
                out_row[left..left + copied].copy_from_slice(&input[y * window.in_width * channels..][..copied]);
                out_row[left + copied..].fill(0.0);
            }
        }
    }
}

/// How [`depthwise_planar`] lays out its scratch: phase planes, then the output at the planes' pitch.
#[derive(Debug, Clone, Copy)]
pub struct PhasePlanes {
    /// Row pitch of each phase plane and of the pitched output.
    pub pitch: usize,
    /// Rows of each phase plane.
    pub rows: usize,
    /// Values per phase plane, with room for the last block's overrun.
    pub plane_len: usize,
    /// Values of the pitched output, in whole blocks.
    pub out_len: usize,
}

impl Window {
    /// The window of output rows `rows` alone and the input rows it reads: a band of the output
    /// that can be computed from those input rows only (the executor computes a 1x1 expansion and
    /// the depthwise convolution after it band by band, so the expanded channels stay in cache).
    pub fn band(&self, rows: std::ops::Range<usize>) -> (Window, std::ops::Range<usize>) {
        assert!(rows.start < rows.end && rows.end <= self.out_height, "a band of output rows");
        let first = (rows.start * self.stride).saturating_sub(self.pad_top);
        let end = ((rows.end - 1) * self.stride + self.kernel_height).saturating_sub(self.pad_top).min(self.in_height);
        assert!(first < end, "output rows that read no input row");
        let band = Window {
            in_height: end - first,
            out_height: rows.len(),
            pad_top: self.pad_top.saturating_sub(rows.start * self.stride),
            ..*self
        };
        (band, first..end)
    }

    /// This window over its input zero-padded: the padding on top and left made real rows and
    /// columns, and rows and columns added at the bottom and right up to the last window's reach
    /// (input rows or columns past it dropped), so that every output pixel's window lies inside.
    pub fn padded(&self) -> Window {
        Window {
            in_height: (self.out_height - 1) * self.stride + self.kernel_height,
            in_width: (self.out_width - 1) * self.stride + self.kernel_width,
            pad_top: 0,
            pad_left: 0,
            ..*self
        }
    }

    /// The share of output pixels whose windows lie inside the input: the rest are border pixels,
    /// which [`depthwise_interleaved`] computes one at a time.
    pub fn interior_share(&self) -> f64 {
        let rows = self.interior_along(self.pad_top, self.in_height, self.kernel_height, self.out_height);
        let columns = self.interior_along(self.pad_left, self.in_width, self.kernel_width, self.out_width);
        (rows.len() * columns.len()) as f64 / (self.out_height * self.out_width).max(1) as f64
    }

    /// The output positions along one axis (padding `pad`, `input` and `output` positions, a
    /// `kernel` wide) whose windows lie inside the input.
    fn interior_along(&self, pad: usize, input: usize, kernel: usize, output: usize) -> std::ops::Range<usize> {
        let first = pad.div_ceil(self.stride);
        let end = (input + pad).checked_sub(kernel).map_or(0, |last| last / self.stride + 1).min(output);
        first..end.max(first)
    }

    pub fn phase_planes(&self) -> PhasePlanes {
        let s = self.stride;
        let pitch = self.out_width + (self.kernel_width - 1) / s;
        let rows = self.out_height + (self.kernel_height - 1) / s;
        let out_len = (self.out_height * pitch).div_ceil(LANES) * LANES;
        let max_offset = ((self.kernel_height - 1) / s) * pitch + (self.kernel_width - 1) / s;
        // Room for the furthest block either kernel reads: whole pitched blocks, or row by row.
        let row_blocks_end = (self.out_height - 1) * pitch + self.out_width.div_ceil(LANES) * LANES;
        let plane_len = (rows * pitch).max(max_offset + out_len.max(row_blocks_end));
        PhasePlanes { pitch, rows, plane_len, out_len }
    }

    /// Scratch values [`depthwise_planar`] needs.
    pub fn planar_scratch_len(&self) -> usize {
        let p = self.phase_planes();
        self.stride * self.stride * p.plane_len + p.out_len
    }
}

#[inline(always)]
fn depthwise_planar_body<M: MulAdd>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    out_channel_stride: usize,
    window: &Window,
    scratch: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && matches!(window.stride, 1 | 2) {
        let taps = window.kernel_height * window.kernel_width;
        // SAFETY (each arm): the CPU has AVX-512 (checked just above).
        match taps {
            9 => return unsafe { avx512::depthwise_planar::<9>(input, weights, epilogue, output, out_channel_stride, window, scratch) },
            25 => return unsafe { avx512::depthwise_planar::<25>(input, weights, epilogue, output, out_channel_stride, window, scratch) },
            _ => {}
        }
    }
    let w = window;
    let s = w.stride;
    let (in_plane, out_plane, taps) = (w.in_height * w.in_width, w.out_height * w.out_width, w.kernel_height * w.kernel_width);
    let p = w.phase_planes();
    let (planes, rest) = scratch.split_at_mut(s * s * p.plane_len);
    let pitched = &mut rest[..p.out_len];
    // Where each tap's run starts in `planes`.
    let mut tap_offsets = [0usize; MAX_KERNEL_HEIGHT * MAX_KERNEL_HEIGHT];
    for ky in 0..w.kernel_height {
        for kx in 0..w.kernel_width {
            let plane = (ky % s) * s + kx % s;
            tap_offsets[ky * w.kernel_width + kx] = plane * p.plane_len + (ky / s) * p.pitch + kx / s;
        }
    }
    let tap_offsets = &tap_offsets[..taps];
    assert!(tap_offsets.iter().all(|&offset| offset + pitched.len() <= planes.len()), "phase planes too short");
    // The padding is in the same places for every channel: zero it once, then each channel
    // overwrites only the data.
    planes.fill(0.0);
    let channels = weights.len() / taps;
    assert!(channels == 0 || output.len() >= (channels - 1) * out_channel_stride + out_plane, "output too short");
    for channel in 0..channels {
        let out_channel = &mut output[channel * out_channel_stride..][..out_plane];
        let in_channel = &input[channel * in_plane..(channel + 1) * in_plane];
        for (y, row) in in_channel.chunks_exact(w.in_width).enumerate() {
            let padded_row = y + w.pad_top;
            let (phase_row, plane_row) = (padded_row % s, padded_row / s);
            if plane_row >= p.rows {
                continue;
            }
            for phase_col in 0..s {
                let plane = &mut planes[(phase_row * s + phase_col) * p.plane_len..][..p.rows * p.pitch];
                let out = &mut plane[plane_row * p.pitch..(plane_row + 1) * p.pitch];
                // Plane column i holds padded column i·s + phase_col, i.e. input column
                // i·s + phase_col - pad_left.
                let first = w.pad_left.saturating_sub(phase_col).div_ceil(s).min(p.pitch);
                let end = (row.len() + w.pad_left).saturating_sub(phase_col).div_ceil(s).clamp(first, p.pitch);
                if first == end {
                    continue;
                }
                let start = first * s + phase_col - w.pad_left;
                copy_every(&row[start..], s, &mut out[first..end]);
            }
        }
        let kernel = &weights[channel * taps..(channel + 1) * taps];
        let bias = epilogue.bias[channel];
        accumulate_taps::<M>(planes, pitched, kernel, tap_offsets, bias, epilogue);
        for (out_row, pitched_row) in out_channel.chunks_exact_mut(w.out_width).zip(pitched.chunks(p.pitch)) {
            out_row.copy_from_slice(&pitched_row[..w.out_width]);
        }
    }
}

/// `out[i] = source[i·step]`. A stride of 2 goes by pairs, which the compiler turns into shuffles
/// rather than a gather.
#[inline(always)]
fn copy_every(source: &[f32], step: usize, out: &mut [f32]) {
    match step {
        1 => out.copy_from_slice(&source[..out.len()]),
        2 => {
            let pairs = source.chunks_exact(2);
            let last = pairs.remainder().first().copied();
            let copied = out.iter_mut().zip(pairs).map(|(o, pair)| *o = pair[0]).count();
            if let (Some(o), Some(v)) = (out.get_mut(copied), last) {
                *o = v;
            }
        }
        _ => out.iter_mut().zip(source.iter().step_by(step)).for_each(|(o, &v)| *o = v),
    }
}

/// Each block of 16 pitched outputs accumulates its taps in registers, then is clamped.
#[inline(always)]
fn accumulate_taps<M: MulAdd>(
    planes: &[f32],
    pitched: &mut [f32],
    kernel: &[f32],
    tap_offsets: &[usize],
    bias: f32,
    epilogue: &Epilogue,
) {
    for (block, out) in pitched.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [bias; LANES];
        for (&tap, &offset) in kernel.iter().zip(tap_offsets) {
            let source: &[f32; LANES] = planes[offset + block * LANES..][..LANES].try_into().expect("16");
            for i in 0..LANES {
                acc[i] = M::mul_add(source[i], tap, acc[i]);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = a.max(epilogue.low).min(epilogue.high);
        }
    }
}

/// Kernels written with AVX-512 intrinsics where the compiler's vectorisation of the portable code
/// fell short (measured with `cargo bench --bench executor`).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{DepthwiseOutput, Epilogue, ImageStrides, Levels, Window, LANES};

    /// Lanes `0..count` of a 16-lane vector.
    fn mask(count: usize) -> __mmask16 {
        if count >= LANES {
            0xffff
        } else {
            ((1u32 << count) - 1) as __mmask16
        }
    }

    /// [`super::depthwise_planar`] for `T` taps and stride 1 or 2: phase planes built with vector
    /// moves (stride 2 deinterleaves with one permute per 16 outputs), every output row computed
    /// in place with masked stores, the taps' weights held in registers for a whole channel.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn depthwise_planar<const T: usize>(
        input: &[f32],
        weights: &[f32],
        epilogue: &Epilogue,
        output: &mut [f32],
        out_channel_stride: usize,
        window: &Window,
        scratch: &mut [f32],
    ) {
        let w = window;
        let s = w.stride;
        assert!(matches!(s, 1 | 2) && w.kernel_height * w.kernel_width == T);
        let (in_plane, out_plane) = (w.in_height * w.in_width, w.out_height * w.out_width);
        let p = w.phase_planes();
        let planes = &mut scratch[..s * s * p.plane_len];
        let channels = weights.len() / T;
        assert!(input.len() >= channels * in_plane && (channels == 0 || output.len() >= (channels - 1) * out_channel_stride + out_plane));
        let mut offsets = [0usize; T];
        for ky in 0..w.kernel_height {
            for kx in 0..w.kernel_width {
                offsets[ky * w.kernel_width + kx] = ((ky % s) * s + kx % s) * p.plane_len + (ky / s) * p.pitch + kx / s;
            }
        }
        // Every read below stays inside `planes`: the furthest is a tap's offset plus the last
        // output row's last block (`phase_planes` sized the planes for it).
        let furthest = (w.out_height - 1) * p.pitch + w.out_width.div_ceil(LANES) * LANES;
        assert!(offsets.iter().all(|&o| o + furthest <= planes.len()));
        let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
        // Even and odd lanes of a 32-value pair of vectors.
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        planes.fill(0.0); // the padding, the same for every channel
        let base = planes.as_mut_ptr();
        for (channel, kernel) in weights.chunks_exact(T).enumerate() {
            let source = &input[channel * in_plane..(channel + 1) * in_plane];
            for (y, row) in source.chunks_exact(w.in_width).enumerate() {
                let padded_row = y + w.pad_top;
                let plane_row = padded_row / s;
                if plane_row >= p.rows {
                    continue;
                }
                let row_planes = (padded_row % s) * s;
                if s == 1 {
                    // Input column x goes to plane column x + pad_left, while that is < pitch.
                    let count = w.in_width.min(p.pitch - w.pad_left.min(p.pitch));
                    let dest = plane_row * p.pitch + w.pad_left;
                    for x in (0..count).step_by(LANES) {
                        let m = mask(count - x);
                        // SAFETY: x < count ≤ row.len(), and dest + count ≤ rows·pitch ≤ plane_len.
                        unsafe {
                            let v = _mm512_maskz_loadu_ps(m, row.as_ptr().add(x));
                            _mm512_mask_storeu_ps(base.add(dest + x), m, v);
                        }
                    }
                } else {
                    // Input column x is padded column c = x + pad_left: phase c % 2, plane column c / 2.
                    for x in (0..w.in_width).step_by(2 * LANES) {
                        let n = (w.in_width - x).min(2 * LANES);
                        // SAFETY: the loads read lanes < n of the row (masked).
                        let (low_half, high_half) = unsafe {
                            (
                                _mm512_maskz_loadu_ps(mask(n), row.as_ptr().add(x)),
                                _mm512_maskz_loadu_ps(mask(n.saturating_sub(LANES)), row.as_ptr().wrapping_add(x + LANES)),
                            )
                        };
                        for (parity, lanes) in [(0, evens), (1, odds)] {
                            let c = x + parity + w.pad_left;
                            let (phase, column) = (c % 2, c / 2);
                            // Values of this parity in the chunk, and those that land inside the pitch.
                            let count = ((n + 1 - parity) / 2).min(p.pitch.saturating_sub(column));
                            if count > 0 {
                                let v = _mm512_permutex2var_ps(low_half, lanes, high_half);
                                let dest = (row_planes + phase) * p.plane_len + plane_row * p.pitch + column;
                                // SAFETY: `count` values at column < pitch of row plane_row < rows.
                                unsafe { _mm512_mask_storeu_ps(base.add(dest), mask(count), v) };
                            }
                        }
                    }
                }
            }
            let taps: [__m512; T] = std::array::from_fn(|t| _mm512_set1_ps(kernel[t]));
            let bias = _mm512_set1_ps(epilogue.bias[channel]);
            let out = &mut output[channel * out_channel_stride..][..out_plane];
            // Four rows at a time: four independent chains of multiply-adds keep the FMA units busy;
            // the last one to three rows together, not one by one (a 7-row map would otherwise
            // spend most of its time in three single chains).
            let rows = Rows { base, offsets: &offsets, taps: &taps, bias, low, high, pitch: p.pitch, width: w.out_width };
            let full = w.out_height / 4 * 4;
            for oy in (0..full).step_by(4) {
                // SAFETY: rows oy..oy + 4 < out_height; reads bounded by `furthest` as asserted.
                unsafe { rows.compute::<4>(oy, out) };
            }
            // SAFETY (each arm): rows full..out_height; as above.
            match w.out_height - full {
                3 => unsafe { rows.compute::<3>(full, out) },
                2 => unsafe { rows.compute::<2>(full, out) },
                1 => unsafe { rows.compute::<1>(full, out) },
                _ => {}
            }
        }
    }

    /// [`super::depthwise_interleaved`] for `channels` a multiple of `V`·16, `V`·16 channels at a
    /// time: a pixel's accumulators for them live in registers. (An expanded MobileNet block has 96
    /// to 1152 channels: one group of 16 at a time fills every lane whatever the map's size, where
    /// a channels-first kernel fills 7 lanes of 16 on a 7x7 map.)
    #[target_feature(enable = "avx512f")]
    pub unsafe fn depthwise_interleaved<const V: usize>(
        input: &[f32],
        weights: &[f32],
        epilogue: &Epilogue,
        mut output: DepthwiseOutput,
        window: &Window,
        channels: usize,
    ) {
        let w = window;
        let group = V * LANES;
        let (kernel_height, kernel_width) = (w.kernel_height, w.kernel_width);
        let output_len = match &output {
            DepthwiseOutput::Floats(out) => out.len(),
            DepthwiseOutput::Bytes(out, _) => out.len(),
        };
        assert!(
            channels.is_multiple_of(group)
                && input.len() >= w.in_height * w.in_width * channels
                && weights.len() >= kernel_height * kernel_width * channels
                && output_len >= w.out_height * w.out_width * channels
                && epilogue.bias.len() >= channels
        );
        let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
        for first in (0..channels).step_by(group) {
            // SAFETY: bias holds `channels` values (asserted).
            let bias: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(epilogue.bias.as_ptr().add(first + v * LANES)) });
            let (source, taps) = (input[first..].as_ptr(), weights[first..].as_ptr());
            // SAFETY: the sweep passes pixels inside the image and taps < KH·KW (sizes asserted above).
            let visit = |acc: &mut [__m512; V], tap: usize, pixel: usize| unsafe {
                accumulate(acc, source.add(pixel * channels), taps.add(tap * channels))
            };
            // SAFETY (each arm): AVX-512, as this function (the stores' slices hold every output
            // pixel, asserted above).
            match &mut output {
                DepthwiseOutput::Floats(out) => unsafe { sweep::<V, 8>(w, bias, clamped::<V>(&mut out[first..], channels, low, high), visit) },
                DepthwiseOutput::Bytes(out, levels) => unsafe {
                    sweep::<V, 8>(w, bias, quantized::<V>(&mut out[first..], channels, low, high, *levels), visit)
                },
            }
        }
    }

    /// A dense convolution of channel-interleaved data with few input channels (a stem's RGB) into
    /// `V`·16 output channels: each input value of a pixel's window is broadcast against its row of
    /// the tap-major weights ([KH·KW][in channels][out channels]). im2col would lay out a column
    /// matrix nine times the input's size for a product with a depth of 27.
    ///
    /// # Safety
    /// AVX-512; `in_channels` ≤ [`MAX_DIRECT_IN_CHANNELS`](super::MAX_DIRECT_IN_CHANNELS).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn conv_interleaved<const V: usize>(
        input: &[f32],
        in_channels: usize,
        strides: ImageStrides,
        weights: &[f32],
        epilogue: &Epilogue,
        output: &mut [f32],
        window: &Window,
    ) {
        // A fixed channel count unrolls each pixel's loop over its channels, so the run's pixels
        // share each weight row's loads (a loop of unknown length loaded them once per pixel: 12
        // loads for 8 multiply-adds, 0.54 ms for the SSD's 150x150 stem).
        // SAFETY (each arm): the caller's contract.
        unsafe {
            match in_channels {
                1 => conv_interleaved_fixed::<V, 1>(input, strides, weights, epilogue, output, window),
                2 => conv_interleaved_fixed::<V, 2>(input, strides, weights, epilogue, output, window),
                3 => conv_interleaved_fixed::<V, 3>(input, strides, weights, epilogue, output, window),
                _ => conv_interleaved_fixed::<V, 4>(input, strides, weights, epilogue, output, window),
            }
        }
    }

    /// [`conv_interleaved`] with `IC` input channels.
    ///
    /// # Safety
    /// AVX-512.
    #[target_feature(enable = "avx512f")]
    unsafe fn conv_interleaved_fixed<const V: usize, const IC: usize>(
        input: &[f32],
        strides: ImageStrides,
        weights: &[f32],
        epilogue: &Epilogue,
        output: &mut [f32],
        window: &Window,
    ) {
        let w = window;
        let channels = V * LANES;
        // A pixel index (row · width + column) and a channel address a value: the input is one
        // image, channels-last or channels-first.
        let (pixel_stride, channel_stride) = (strides.column, strides.channel);
        assert!(
            strides.row == w.in_width * pixel_stride
                && (w.in_height * w.in_width - 1) * pixel_stride + (IC - 1) * channel_stride < input.len()
                && weights.len() >= w.kernel_height * w.kernel_width * IC * channels
                && output.len() >= w.out_height * w.out_width * channels
                && epilogue.bias.len() >= channels
        );
        let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
        // SAFETY: bias holds `channels` values (asserted).
        let bias: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(epilogue.bias.as_ptr().add(v * LANES)) });
        let (source, taps) = (input.as_ptr(), weights.as_ptr());
        let accumulate_pixel = |acc: &mut [__m512; V], tap: usize, pixel: usize| {
            for c in 0..IC {
                // SAFETY: the sweep passes pixels inside the image and taps < KH·KW; c < IC
                // (sizes asserted above).
                unsafe {
                    let value = _mm512_set1_ps(*source.add(pixel * pixel_stride + c * channel_stride));
                    let row = taps.add((tap * IC + c) * channels);
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(value, _mm512_loadu_ps(row.add(v * LANES)), *a);
                    }
                }
            }
        };
        // SAFETY: as above. (Four pixels at once: eight spill the registers.)
        unsafe { sweep::<V, 4>(w, bias, clamped::<V>(output, channels, low, high), accumulate_pixel) }
    }

    /// Computes every output pixel of `w` from `bias` and the taps `visit(acc, tap, input pixel)`
    /// adds, and hands each to `store(output pixel, acc)` (V·16 channels). Runs of `P` interior pixels
    /// are computed at once, with fixed tap offsets: each pixel has its own chains of multiply-adds,
    /// and one pixel's few chains leave the FMA units idle (a step of a chain waits four cycles for
    /// the one before). The border pixels take [`Window::visit_taps`].
    ///
    /// # Safety
    /// AVX-512.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn sweep<const V: usize, const P: usize>(
        w: &Window,
        bias: [__m512; V],
        mut store: impl FnMut(usize, &[__m512; V]),
        mut visit: impl FnMut(&mut [__m512; V], usize, usize),
    ) {
        // Output rows and columns whose windows lie inside the image.
        let interior_rows = w.interior_along(w.pad_top, w.in_height, w.kernel_height, w.out_height);
        let interior_columns = w.interior_along(w.pad_left, w.in_width, w.kernel_width, w.out_width);
        for oy in 0..w.out_height {
            // The first input row of an interior output row.
            let top = interior_rows.contains(&oy).then(|| oy * w.stride - w.pad_top);
            let mut ox = 0;
            while ox < w.out_width {
                // Interior pixels from ox on in this row: runs of P, then of 4, 2 and 1 at the row's
                // end (a 7-pixel row of a padded map is 4 + 2 + 1, not 7 single pixels).
                let interior = match top {
                    Some(_) if ox >= interior_columns.start => interior_columns.end.saturating_sub(ox),
                    _ => 0,
                };
                let run = [P, 4, 2, 1].into_iter().find(|&run| run <= interior && run <= P).unwrap_or(0);
                let pixels = Pixels { w, top: top.unwrap_or(0), oy, ox };
                // SAFETY (each arm): the run's pixels are interior (their windows lie inside the
                // input).
                match run {
                    0 => {
                        let mut acc = bias;
                        w.visit_taps(oy, ox, |tap, pixel| visit(&mut acc, tap, pixel));
                        store(oy * w.out_width + ox, &acc);
                        ox += 1;
                        continue;
                    }
                    r if r == P => unsafe { pixels.run::<V, P>(bias, &mut store, &mut visit) },
                    4 => unsafe { pixels.run::<V, 4>(bias, &mut store, &mut visit) },
                    2 => unsafe { pixels.run::<V, 2>(bias, &mut store, &mut visit) },
                    _ => unsafe { pixels.run::<V, 1>(bias, &mut store, &mut visit) },
                }
                ox += run;
            }
        }
    }

    /// Output pixels from (`oy`, `ox`) on, of a [`sweep`].
    struct Pixels<'a> {
        w: &'a Window,
        /// The first input row of output row `oy` (for interior pixels).
        top: usize,
        oy: usize,
        ox: usize,
    }

    impl Pixels<'_> {
        /// Computes `Q` interior pixels, each with its own chains of multiply-adds, at fixed tap
        /// offsets.
        ///
        /// # Safety
        /// AVX-512; the pixels are interior.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn run<const V: usize, const Q: usize>(
            &self,
            bias: [__m512; V],
            store: &mut impl FnMut(usize, &[__m512; V]),
            visit: &mut impl FnMut(&mut [__m512; V], usize, usize),
        ) {
            let w = self.w;
            let left = self.ox * w.stride - w.pad_left;
            let mut acc = [bias; Q];
            for ky in 0..w.kernel_height {
                let row = (self.top + ky) * w.in_width + left;
                for kx in 0..w.kernel_width {
                    for (p, a) in acc.iter_mut().enumerate() {
                        visit(a, ky * w.kernel_width + kx, row + kx + p * w.stride);
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                store(self.oy * w.out_width + self.ox + p, a);
            }
        }
    }

    /// A store for [`sweep`]: each pixel's V·16 values clamped to `low..high`, `pixel_stride` values
    /// apart in `output` (a pixel outside it panics).
    ///
    /// # Safety
    /// AVX-512.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn clamped<const V: usize>(
        output: &mut [f32],
        pixel_stride: usize,
        low: __m512,
        high: __m512,
    ) -> impl FnMut(usize, &[__m512; V]) + '_ {
        move |pixel, acc| {
            let out = &mut output[pixel * pixel_stride..][..V * LANES];
            for (v, a) in acc.iter().enumerate() {
                // SAFETY: `out` holds V·16 values.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(v * LANES), _mm512_min_ps(_mm512_max_ps(*a, low), high)) };
            }
        }
    }

    /// A store for [`sweep`]: each pixel's V·16 values clamped to `low..high` and quantised to u8 with
    /// `levels` (as [`crate::runtime::quantized::quantize`] rounds), `pixel_stride` bytes apart in
    /// `output` (a pixel outside it panics).
    ///
    /// # Safety
    /// AVX-512.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn quantized<const V: usize>(
        output: &mut [u8],
        pixel_stride: usize,
        low: __m512,
        high: __m512,
        levels: Levels,
    ) -> impl FnMut(usize, &[__m512; V]) + '_ {
        let (inverse, zero) = (_mm512_set1_ps(1.0 / levels.scale), _mm512_set1_ps(levels.zero as f32));
        move |pixel, acc| {
            let out = &mut output[pixel * pixel_stride..][..V * LANES];
            for (v, a) in acc.iter().enumerate() {
                let clamped = _mm512_min_ps(_mm512_max_ps(*a, low), high);
                let q = _mm512_cvtps_epi32(_mm512_fmadd_ps(clamped, inverse, zero));
                // SAFETY: `out` holds V·16 bytes.
                unsafe { _mm_storeu_si128(out.as_mut_ptr().add(v * LANES) as *mut __m128i, _mm512_cvtusepi32_epi8(q)) };
            }
        }
    }

    /// `acc += source · taps` over V blocks of 16 channels.
    ///
    /// # Safety
    /// AVX-512; `source` and `taps` each point at V·16 readable values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn accumulate<const V: usize>(acc: &mut [__m512; V], source: *const f32, taps: *const f32) {
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            *a = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(source.add(v * LANES)) }, unsafe { _mm512_loadu_ps(taps.add(v * LANES)) }, *a);
        }
    }

    /// One channel's output rows, computed from its phase planes.
    struct Rows<'a, const T: usize> {
        base: *const f32,
        offsets: &'a [usize; T],
        taps: &'a [__m512; T],
        bias: __m512,
        low: __m512,
        high: __m512,
        pitch: usize,
        width: usize,
    }

    impl<const T: usize> Rows<'_, T> {
        /// Output rows `oy..oy + R` into `out` (the channel's output plane).
        ///
        /// # Safety
        /// AVX-512; `oy + R` ≤ the output height; every tap offset plus (oy + R - 1)·pitch plus the
        /// row's whole blocks lies inside the planes.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn compute<const R: usize>(&self, oy: usize, out: &mut [f32]) {
            for ox in (0..self.width).step_by(LANES) {
                let mut acc = [self.bias; R];
                for t in 0..T {
                    for (r, a) in acc.iter_mut().enumerate() {
                        let at = self.offsets[t] + (oy + r) * self.pitch + ox;
                        // SAFETY: the caller's contract.
                        *a = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(self.base.add(at)) }, self.taps[t], *a);
                    }
                }
                let m = mask(self.width - ox);
                for (r, a) in acc.iter().enumerate() {
                    let clamped = _mm512_min_ps(_mm512_max_ps(*a, self.low), self.high);
                    let row = &mut out[(oy + r) * self.width..(oy + r + 1) * self.width];
                    // SAFETY: the masked lanes stay inside `row`.
                    unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr().add(ox), m, clamped) };
                }
            }
        }
    }
}

/// Where the interleaved depthwise kernel writes: f32 values, or those quantised to u8 with fixed
/// levels for the int8 product that reads them next (which then need not quantise a tensor it would
/// first have to read whole for its range).
pub enum DepthwiseOutput<'a> {
    Floats(&'a mut [f32]),
    Bytes(&'a mut [u8], Levels),
}

/// [`depthwise_interleaved`] with its values clamped to the epilogue's range, then quantised to u8
/// with `levels` (rounded as [`super::quantized::quantize`] rounds).
///
/// # Panics
/// Unless the CPU has AVX-512 and `channels` is a multiple of 16 (what [`channels_quantize`] checks).
pub fn depthwise_interleaved_quantized(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    levels: Levels,
    output: &mut [u8],
    window: &Window,
    channels: usize,
) {
    let done = depthwise_interleaved_avx512(input, weights, epilogue, DepthwiseOutput::Bytes(output, levels), window, channels);
    assert!(done, "a quantised depthwise output needs AVX-512 and channels in groups of 16, not {channels}");
}

/// Whether [`depthwise_interleaved_quantized`] takes `channels` on this CPU.
pub fn channels_quantize(channels: usize) -> bool {
    isa() == Isa::Avx512 && channels.is_multiple_of(LANES)
}

/// The AVX-512 interleaved depthwise kernel, in the widest groups of 16 channels that divide
/// `channels`; `false`, with nothing written, on a CPU without AVX-512 or for other channel counts.
fn depthwise_interleaved_avx512(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: DepthwiseOutput,
    window: &Window,
    channels: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY (each arm): the CPU has AVX-512 (checked just above).
        unsafe {
            match channels {
                64 => avx512::depthwise_interleaved::<4>(input, weights, epilogue, output, window, channels),
                // Wider groups first: three vectors a pixel beat one or two by 10 % on the expanded
                // blocks (96 to 1152 channels, every one a multiple of 48).
                c if c % 48 == 0 => avx512::depthwise_interleaved::<3>(input, weights, epilogue, output, window, channels),
                c if c % 32 == 0 => avx512::depthwise_interleaved::<2>(input, weights, epilogue, output, window, channels),
                c if c % 16 == 0 => avx512::depthwise_interleaved::<1>(input, weights, epilogue, output, window, channels),
                _ => return false,
            }
        }
        return true;
    }
    let _ = (input, weights, epilogue, output, window, channels);
    false
}

multiversion! {
    /// Depthwise convolution of channel-interleaved data (H×W×C in, OH×OW×C out), vectorised across
    /// channels. `weights` are laid out tap-major: [KH·KW][C].
    pub fn depthwise_interleaved(
        input: &[f32], weights: &[f32], epilogue: &Epilogue, output: &mut [f32], window: &Window,
        channels: usize,
    ) => depthwise_interleaved_body
}

#[inline(always)]
fn depthwise_interleaved_body<M: MulAdd>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
    channels: usize,
) {
    if depthwise_interleaved_avx512(input, weights, epilogue, DepthwiseOutput::Floats(&mut *output), window, channels) {
        return;
    }
    match channels {
        16 => depthwise_interleaved_blocks::<M, 1>(input, weights, epilogue, output, window),
        32 => depthwise_interleaved_blocks::<M, 2>(input, weights, epilogue, output, window),
        48 => depthwise_interleaved_blocks::<M, 3>(input, weights, epilogue, output, window),
        64 => depthwise_interleaved_blocks::<M, 4>(input, weights, epilogue, output, window),
        _ => depthwise_interleaved_any::<M>(input, weights, epilogue, output, window, channels),
    }
}

/// [`depthwise_interleaved`] for `V`·16 channels: a pixel's accumulators live in registers.
#[inline(always)]
fn depthwise_interleaved_blocks<M: MulAdd, const V: usize>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
) {
    let w = window;
    let channels = V * LANES;
    let bias: &[f32] = &epilogue.bias;
    for (pixel, out) in output.chunks_exact_mut(channels).enumerate() {
        let (oy, ox) = (pixel / w.out_width, pixel % w.out_width);
        let mut acc = [[0f32; LANES]; V];
        for (v, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&bias[v * LANES..(v + 1) * LANES]);
        }
        for (tap, pixel_in) in w.taps(oy, ox) {
            let source = &input[pixel_in * channels..][..channels];
            let taps = &weights[tap * channels..][..channels];
            for (v, a) in acc.iter_mut().enumerate() {
                let s: &[f32; LANES] = source[v * LANES..(v + 1) * LANES].try_into().expect("16");
                let t: &[f32; LANES] = taps[v * LANES..(v + 1) * LANES].try_into().expect("16");
                for i in 0..LANES {
                    a[i] = M::mul_add(s[i], t[i], a[i]);
                }
            }
        }
        for (v, a) in acc.iter().enumerate() {
            for (o, &x) in out[v * LANES..(v + 1) * LANES].iter_mut().zip(a) {
                *o = x.max(epilogue.low).min(epilogue.high);
            }
        }
    }
}

/// [`depthwise_interleaved`] for any number of channels.
#[inline(always)]
fn depthwise_interleaved_any<M: MulAdd>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
    channels: usize,
) {
    let w = window;
    for (pixel, out) in output.chunks_exact_mut(channels).enumerate() {
        let (oy, ox) = (pixel / w.out_width, pixel % w.out_width);
        out.copy_from_slice(&epilogue.bias);
        for (tap, pixel_in) in w.taps(oy, ox) {
            let source = &input[pixel_in * channels..][..channels];
            let taps = &weights[tap * channels..][..channels];
            for ((o, &s), &t) in out.iter_mut().zip(source).zip(taps) {
                *o = M::mul_add(s, t, *o);
            }
        }
        for o in out.iter_mut() {
            *o = o.max(epilogue.low).min(epilogue.high);
        }
    }
}

/// The stems [`conv_interleaved`] takes: at most this many input channels, output channels a multiple
/// of 16 up to 64.
pub const MAX_DIRECT_IN_CHANNELS: usize = 4;

/// Whether [`conv_interleaved`] runs a channels-last convolution of `in_channels` → `out_channels`
/// on this CPU.
pub fn conv_interleaved_takes(in_channels: usize, out_channels: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && isa() == Isa::Avx512
        && in_channels <= MAX_DIRECT_IN_CHANNELS
        && matches!(out_channels, 16 | 32 | 48 | 64)
}

/// A dense convolution into channel-interleaved output (OH×OW×OC) straight from the input (H×W×IC
/// or IC×H×W, as `strides` say), for the shapes [`conv_interleaved_takes`] accepts; `weights` are
/// tap-major: [KH·KW][IC][OC].
pub fn conv_interleaved(
    input: &[f32],
    in_channels: usize,
    strides: ImageStrides,
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
) {
    let out_channels = epilogue.bias.len();
    assert!(conv_interleaved_takes(in_channels, out_channels), "conv_interleaved on a shape it does not take");
    #[cfg(target_arch = "x86_64")]
    // SAFETY (each arm): `conv_interleaved_takes` checked AVX-512.
    unsafe {
        match out_channels {
            16 => avx512::conv_interleaved::<1>(input, in_channels, strides, weights, epilogue, output, window),
            32 => avx512::conv_interleaved::<2>(input, in_channels, strides, weights, epilogue, output, window),
            48 => avx512::conv_interleaved::<3>(input, in_channels, strides, weights, epilogue, output, window),
            _ => avx512::conv_interleaved::<4>(input, in_channels, strides, weights, epilogue, output, window),
        }
    }
}

/// Strides of one image's channel, row and column axes (channel-first and channel-last data differ
/// only in these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageStrides {
    pub channel: usize,
    pub row: usize,
    pub column: usize,
}

impl ImageStrides {
    /// A channels-first image as `window` reads it: channel planes one after another.
    pub fn planar(window: &Window) -> ImageStrides {
        ImageStrides { channel: window.in_height * window.in_width, row: window.in_width, column: 1 }
    }

    /// A channels-last image of `channels` as `window` reads it: each pixel's channels together.
    pub fn channels_last(window: &Window, channels: usize) -> ImageStrides {
        ImageStrides { channel: 1, row: window.in_width * channels, column: channels }
    }
}

/// Lays out the receptive fields of a dense convolution as `columns`, a (channel, kernel row, kernel
/// column) × output pixel matrix, zero where the window hangs over the border, so the convolution
/// becomes one matrix product with the OIHW kernel. K-major, so each output row of it is a strided copy
/// of an input row and both product layouts read it with a unit stride.
pub fn im2col(input: &[f32], channels: usize, strides: ImageStrides, window: &Window, columns: &mut [f32]) {
    let w = window;
    let pixels = w.out_height * w.out_width;
    // Zero once, then write only what lies inside the image: zeroing the border pieces one by one
    // would be a call to memset per few values.
    columns.fill(0.0);
    let mut rows = columns.chunks_exact_mut(pixels);
    for channel in 0..channels {
        for ky in 0..w.kernel_height {
            for kx in 0..w.kernel_width {
                let row = rows.next().expect("K rows");
                // Output columns whose input column is inside the image; the rest stay zero.
                let first = w.pad_left.saturating_sub(kx).div_ceil(w.stride).min(w.out_width);
                let end = (w.in_width + w.pad_left).saturating_sub(kx).div_ceil(w.stride).clamp(first, w.out_width);
                if first == end {
                    continue;
                }
                let step = w.stride * strides.column;
                for (oy, out) in row.chunks_exact_mut(w.out_width).enumerate() {
                    let Some(iy) = (oy * w.stride + ky).checked_sub(w.pad_top).filter(|&y| y < w.in_height) else { continue };
                    let start = channel * strides.channel + iy * strides.row + (first * w.stride + kx - w.pad_left) * strides.column;
                    copy_every(&input[start..], step, &mut out[first..end]);
                }
            }
        }
    }
}

multiversion! {
    /// `out[i]` = what a cast of `values[i]` to u8 holds, as f32 (clamped to 0..=255, truncated):
    /// the input of a model that takes u8 pixels. Compiled for AVX2 the truncation is one
    /// instruction; on the x86-64 baseline it is a libm call per value (0.26 ms for a 300x300 image).
    pub fn u8_values(values: &[f32], out: &mut [f32]) => u8_values_body
}

#[inline(always)]
fn u8_values_body<M: MulAdd>(values: &[f32], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(values) {
        *o = v.clamp(0.0, 255.0).trunc();
    }
}

multiversion! {
    /// The logistic function, in place, with a vectorisable `exp` (Cephes' polynomial, ~1 ulp).
    pub fn sigmoid(values: &mut [f32]) => sigmoid_body
}

#[inline(always)]
fn sigmoid_body<M: MulAdd>(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = 1.0 / (1.0 + exp::<M>(-*v));
    }
}

/// e^x without branches, so loops over it vectorise: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6
/// polynomial for e^r, and 2^n built in the exponent bits.
#[inline(always)]
fn exp<M: MulAdd>(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    let shifted = M::mul_add(x, std::f32::consts::LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = M::mul_add(n, -0.693_359_4, x);
    let r = M::mul_add(n, 2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4;
    p = M::mul_add(p, r, 1.398_199_9e-3);
    p = M::mul_add(p, r, 8.333_452e-3);
    p = M::mul_add(p, r, 4.166_579_6e-2);
    p = M::mul_add(p, r, 1.666_666_5e-1);
    p = M::mul_add(p, r, 0.5);
    let e_r = M::mul_add(p, r * r, r) + 1.0;
    // n in integer form, read from the bits of `shifted` (ROUND's bits plus n): `n as i32` would
    // be a saturating conversion, which kept the loop from vectorising (3 cycles a value).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e_r * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// An element-wise operation of two operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinaryOp {
    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
        }
    }
}

/// `output = a op b` with NumPy broadcasting: `a_strides` and `b_strides` are the operands' strides
/// over the output's shape, 0 along broadcast axes.
pub fn binary(op: BinaryOp, a: &[f32], a_strides: &[usize], b: &[f32], b_strides: &[usize], output: &mut [f32], shape: &[usize]) {
    let inner = *shape.last().unwrap_or(&1);
    let (a_inner, b_inner) = (*a_strides.last().unwrap_or(&0), *b_strides.last().unwrap_or(&0));
    let outer_shape = &shape[..shape.len().saturating_sub(1)];
    for_each_index(outer_shape, |index, row| {
        let offset = |strides: &[usize]| index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        let (a_base, b_base) = (offset(a_strides), offset(b_strides));
        let out = &mut output[row * inner..(row + 1) * inner];
        macro_rules! run {
            ($f:expr) => {
                match (a_inner, b_inner) {
                    (1, 1) => {
                        for ((o, x), y) in out.iter_mut().zip(&a[a_base..a_base + inner]).zip(&b[b_base..b_base + inner]) {
                            *o = $f(*x, *y);
                        }
                    }
                    (1, 0) => {
                        let y = b[b_base];
                        for (o, x) in out.iter_mut().zip(&a[a_base..a_base + inner]) {
                            *o = $f(*x, y);
                        }
                    }
                    (0, 1) => {
                        let x = a[a_base];
                        for (o, y) in out.iter_mut().zip(&b[b_base..b_base + inner]) {
                            *o = $f(x, *y);
                        }
                    }
                    _ => {
                        for (i, o) in out.iter_mut().enumerate() {
                            *o = $f(a[a_base + i * a_inner], b[b_base + i * b_inner]);
                        }
                    }
                }
            };
        }
        match op {
            BinaryOp::Add => run!(|x: f32, y: f32| x + y),
            BinaryOp::Sub => run!(|x: f32, y: f32| x - y),
            BinaryOp::Mul => run!(|x: f32, y: f32| x * y),
            _ => run!(|x: f32, y: f32| op.apply(x, y)),
        }
    });
}

/// Calls `visit(index, linear)` for every multi-index of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut visit: impl FnMut(&[usize], usize)) {
    let count: usize = shape.iter().product();
    let mut index = vec![0usize; shape.len()];
    for linear in 0..count {
        visit(&index, linear);
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// Copies `input`, read through `strides` (one per axis of `shape`), into `output` in row-major order:
/// transposes and broadcasts.
pub fn strided_copy(input: &[f32], strides: &[usize], output: &mut [f32], shape: &[usize]) {
    for_each_index(shape, |index, linear| {
        output[linear] = input[index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>()];
    });
}

/// Sums `input` (row-major `shape`) into `output`, whose strides over `shape` are 0 along the reduced
/// axes.
pub fn reduce_sum(input: &[f32], shape: &[usize], output: &mut [f32], output_strides: &[usize]) {
    if let ([outer, inner], [1, 0]) = (shape, output_strides) {
        // The common case, a pool over the innermost axes: one contiguous sum per output.
        for (o, row) in output.iter_mut().zip(input.chunks_exact(*inner)).take(*outer) {
            *o = row.iter().sum();
        }
        return;
    }
    if let ([outer, pixels, channels], [row, 0, 1]) = (shape, output_strides) {
        if row == channels {
            // A pool over the pixels of a channels-last tensor: each pixel's channels added to the
            // sums in one pass, pixel after pixel (the order the channels-first case adds them in).
            for (sums, image) in output.chunks_exact_mut(*channels).zip(input.chunks_exact(pixels * channels)).take(*outer) {
                sums.fill(0.0);
                for pixel in image.chunks_exact(*channels) {
                    sums.iter_mut().zip(pixel).for_each(|(sum, value)| *sum += value);
                }
            }
            return;
        }
    }
    output.fill(0.0);
    for_each_index(shape, |index, linear| {
        output[index.iter().zip(output_strides).map(|(i, s)| i * s).sum::<usize>()] += input[linear];
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A square kernel's sweep over an `in_height`×`in_width` image.
    pub(crate) fn test_window(kernel: usize, stride: usize, pad: usize, in_height: usize, in_width: usize) -> Window {
        Window {
            in_height,
            in_width,
            out_height: (in_height + 2 * pad - kernel) / stride + 1,
            out_width: (in_width + 2 * pad - kernel) / stride + 1,
            kernel_height: kernel,
            kernel_width: kernel,
            stride,
            pad_top: pad,
            pad_left: pad,
        }
    }

    /// Straightforward dense convolution of a channels-last image (OIHW weights, no bias), its output
    /// channels-last, for comparison.
    pub(crate) fn dense_reference(input: &[f32], in_channels: usize, weights: &[f32], out_channels: usize, w: &Window) -> Vec<f32> {
        let mut out = vec![0.0; w.out_height * w.out_width * out_channels];
        for (pixel, values) in out.chunks_exact_mut(out_channels).enumerate() {
            let (oy, ox) = (pixel / w.out_width, pixel % w.out_width);
            for (o, value) in values.iter_mut().enumerate() {
                for ky in 0..w.kernel_height {
                    for kx in 0..w.kernel_width {
                        let iy = (oy * w.stride + ky).checked_sub(w.pad_top).filter(|&y| y < w.in_height);
                        let ix = (ox * w.stride + kx).checked_sub(w.pad_left).filter(|&x| x < w.in_width);
                        let (Some(iy), Some(ix)) = (iy, ix) else { continue };
                        for i in 0..in_channels {
                            *value += input[(iy * w.in_width + ix) * in_channels + i]
                                * weights[((o * in_channels + i) * w.kernel_height + ky) * w.kernel_width + kx];
                        }
                    }
                }
            }
        }
        out
    }

    /// Straightforward depthwise convolution, channel-planar, for comparison.
    fn depthwise_reference(input: &[f32], weights: &[f32], bias: &[f32], w: &Window, channels: usize) -> Vec<f32> {
        let mut out = vec![0.0; channels * w.out_height * w.out_width];
        for c in 0..channels {
            for oy in 0..w.out_height {
                for ox in 0..w.out_width {
                    let mut acc = bias[c];
                    for ky in 0..w.kernel_height {
                        for kx in 0..w.kernel_width {
                            let iy = (oy * w.stride + ky) as isize - w.pad_top as isize;
                            let ix = (ox * w.stride + kx) as isize - w.pad_left as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < w.in_height && (ix as usize) < w.in_width {
                                acc += input[(c * w.in_height + iy as usize) * w.in_width + ix as usize]
                                    * weights[(c * w.kernel_height + ky) * w.kernel_width + kx];
                            }
                        }
                    }
                    out[(c * w.out_height + oy) * w.out_width + ox] = acc.clamp(0.0, 6.0);
                }
            }
        }
        out
    }

    pub(crate) fn pseudo_random(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0).collect()
    }

    #[test]
    fn depthwise_kernels_match_the_definition() {
        for channels in [5, 32, 64, 80, 144] {
        // Sizes from 7 to 21: outputs narrower and wider than the interleaved kernel's runs of 8 pixels.
        for (kernel, stride, pad, in_size) in [(3, 1, 1, 9), (3, 2, 0, 10), (5, 2, 2, 11), (5, 1, 2, 7), (3, 2, 1, 8), (3, 2, 1, 21), (5, 1, 2, 21)] {
            let w = test_window(kernel, stride, pad, in_size, in_size + 1);
            let input = pseudo_random(channels * w.in_height * w.in_width, 1);
            let weights = pseudo_random(channels * kernel * kernel, 2);
            let mut epilogue = Epilogue::new(channels);
            epilogue.bias = pseudo_random(channels, 3);
            (epilogue.low, epilogue.high) = (0.0, 6.0);
            let expected = depthwise_reference(&input, &weights, &epilogue.bias, &w, channels);

            let mut planar = vec![0.0; expected.len()];
            let mut scratch = vec![0.0; w.planar_scratch_len()];
            let out_plane = w.out_height * w.out_width;
            depthwise_planar(&input, &weights, &epilogue, &mut planar, out_plane, &w, &mut scratch);
            for (a, b) in planar.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "planar {kernel}x{kernel}/{stride}: {a} vs {b}");
            }
            // Band by band (as the executor runs an expansion and its depthwise), from the input
            // rows each band reads.
            for band_rows in [1, 2, 3] {
                let mut banded = vec![f32::NAN; expected.len()];
                for start in (0..w.out_height).step_by(band_rows) {
                    let (band, input_rows) = w.band(start..(start + band_rows).min(w.out_height));
                    let mut rows = Vec::new();
                    for c in 0..channels {
                        let plane = &input[c * w.in_height * w.in_width..][..w.in_height * w.in_width];
                        rows.extend_from_slice(&plane[input_rows.start * w.in_width..input_rows.end * w.in_width]);
                    }
                    let mut scratch = vec![0.0; band.planar_scratch_len()];
                    depthwise_planar(&rows, &weights, &epilogue, &mut banded[start * w.out_width..], out_plane, &band, &mut scratch);
                }
                for (a, b) in banded.iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-5, "bands of {band_rows} rows, {kernel}x{kernel}/{stride}: {a} vs {b}");
                }
            }

            // The same data interleaved (HWC), with tap-major weights.
            let (ih, iw, oh, ow) = (w.in_height, w.in_width, w.out_height, w.out_width);
            let mut hwc = vec![0.0; input.len()];
            for c in 0..channels {
                for p in 0..ih * iw {
                    hwc[p * channels + c] = input[c * ih * iw + p];
                }
            }
            let mut tap_major = vec![0.0; weights.len()];
            for c in 0..channels {
                for t in 0..kernel * kernel {
                    tap_major[t * channels + c] = weights[c * kernel * kernel + t];
                }
            }
            let mut interleaved = vec![0.0; expected.len()];
            depthwise_interleaved(&hwc, &tap_major, &epilogue, &mut interleaved, &w, channels);
            // And over a zero-padded copy, where every pixel is interior.
            let padded_window = w.padded();
            let mut padded = vec![f32::NAN; padded_window.in_height * padded_window.in_width * channels];
            pad_interleaved(&hwc, channels, &w, &mut padded);
            let mut from_padded = vec![0.0; expected.len()];
            depthwise_interleaved(&padded, &tap_major, &epilogue, &mut from_padded, &padded_window, channels);
            assert_eq!(padded_window.interior_share(), 1.0);
            for c in 0..channels {
                for p in 0..oh * ow {
                    let (a, b) = (interleaved[p * channels + c], expected[c * oh * ow + p]);
                    assert!((a - b).abs() < 1e-5, "interleaved {kernel}x{kernel}/{stride}: {a} vs {b}");
                    let a = from_padded[p * channels + c];
                    assert!((a - b).abs() < 1e-5, "interleaved, padded {kernel}x{kernel}/{stride}: {a} vs {b}");
                }
            }
            // Quantised as it is stored: the bytes an int8 product would get from quantising the
            // f32 output with the same levels (rounded to nearest even, as `cvtps2dq` rounds).
            if channels_quantize(channels) {
                let levels = Levels::spanning(0.0, 6.0);
                let mut bytes = vec![0u8; expected.len()];
                depthwise_interleaved_quantized(&hwc, &tap_major, &epilogue, levels, &mut bytes, &w, channels);
                for (&q, &x) in bytes.iter().zip(&interleaved) {
                    let level = x.mul_add(1.0 / levels.scale, levels.zero as f32).round_ties_even();
                    assert_eq!(q as f32, level, "quantised {kernel}x{kernel}/{stride}, {channels} channels: {x}");
                }
            }
        }
        }
    }

    #[test]
    fn direct_interleaved_convolution_matches_the_definition() {
        if !conv_interleaved_takes(3, 32) {
            assert_ne!(isa(), Isa::Avx512, "conv_interleaved refuses a stem on an AVX-512 CPU");
            eprintln!("skipped: conv_interleaved needs AVX-512, which this CPU lacks");
            return;
        }
        for (in_channels, out_channels) in [(3, 32), (1, 16), (2, 48), (4, 64)] {
            for (kernel, stride, pad, in_size) in [(3, 2, 1, 21), (3, 1, 1, 9), (5, 2, 2, 30), (3, 2, 0, 16)] {
                let w = test_window(kernel, stride, pad, in_size, in_size + 3);
                let taps = kernel * kernel;
                let input = pseudo_random(in_channels * w.in_height * w.in_width, 4); // HWC
                let weights = pseudo_random(out_channels * in_channels * taps, 5); // OIHW
                let mut epilogue = Epilogue::new(out_channels);
                epilogue.bias = pseudo_random(out_channels, 6);
                (epilogue.low, epilogue.high) = (-1.5, 6.0);
                let mut tap_major = vec![0.0; weights.len()];
                for o in 0..out_channels {
                    for i in 0..in_channels {
                        for t in 0..taps {
                            tap_major[(t * in_channels + i) * out_channels + o] = weights[(o * in_channels + i) * taps + t];
                        }
                    }
                }
                // The same image channels-first: channel planes one after another.
                let plane = w.in_height * w.in_width;
                let planar: Vec<f32> = (0..in_channels * plane).map(|j| input[(j % plane) * in_channels + j / plane]).collect();
                let layouts = [
                    (&input, ImageStrides::channels_last(&w, in_channels)),
                    (&planar, ImageStrides::planar(&w)),
                ];
                let sums = dense_reference(&input, in_channels, &weights, out_channels, &w);
                for (source, strides) in layouts {
                    let mut output = vec![f32::NAN; w.out_height * w.out_width * out_channels];
                    conv_interleaved(source, in_channels, strides, &tap_major, &epilogue, &mut output, &w);
                    for (j, (got, sum)) in output.iter().zip(&sums).enumerate() {
                        let expected = (sum + epilogue.bias[j % out_channels]).clamp(-1.5, 6.0);
                        assert!((got - expected).abs() < 1e-4, "{in_channels}->{out_channels} {kernel}x{kernel}/{stride} {strides:?} at {j}: {got} vs {expected}");
                    }
                }
            }
        }
    }

    #[test]
    fn u8_values_clamp_and_truncate() {
        let values = [-3.0, 0.0, 0.4, 1.0, 1.99, 254.5, 255.0, 300.0, f32::MAX, f32::MIN];
        let mut out = [f32::NAN; 10];
        u8_values(&values, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 1.0, 1.0, 254.0, 255.0, 255.0, 255.0, 0.0]);
    }

    #[test]
    fn sigmoid_is_accurate() {
        let mut values: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.01).collect();
        let expected: Vec<f32> = values.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
        sigmoid(&mut values);
        for (a, b) in values.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let mut extremes = [-1000.0, 1000.0, f32::MIN, f32::MAX];
        sigmoid(&mut extremes);
        assert!(extremes[0] < 1e-30 && extremes[2] < 1e-30, "{extremes:?}");
        assert!(extremes[1] == 1.0 && extremes[3] == 1.0, "{extremes:?}");
    }

    #[test]
    fn a_pool_sums_the_same_in_either_layout() {
        let (images, channels, pixels) = (3, 40, 49);
        let planar = pseudo_random(images * channels * pixels, 3);
        let mut channels_last = vec![0.0; planar.len()];
        strided_copy(&planar, &[channels * pixels, 1, pixels], &mut channels_last, &[images, pixels, channels]);
        let mut expected = vec![f32::NAN; images * channels];
        reduce_sum(&planar, &[images * channels, pixels], &mut expected, &[1, 0]);
        let mut sums = vec![f32::NAN; images * channels];
        reduce_sum(&channels_last, &[images, pixels, channels], &mut sums, &[channels, 0, 1]);
        assert_eq!(sums, expected);
        let last_channel: f32 = planar[(images * channels - 1) * pixels..].iter().sum();
        assert_eq!(sums[images * channels - 1], last_channel);
    }

    #[test]
    fn broadcasting_binary_ops() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2x3
        let b = [10.0, 20.0]; // 2x1
        let mut out = [0.0; 6];
        binary(BinaryOp::Sub, &a, &[3, 1], &b, &[1, 0], &mut out, &[2, 3]);
        assert_eq!(out, [-9.0, -8.0, -7.0, -16.0, -15.0, -14.0]);
        binary(BinaryOp::Max, &b, &[0, 1], &a, &[0, 1], &mut out[..2], &[1, 2]);
        assert_eq!(&out[..2], &[10.0, 20.0]);
    }
}
