//! The geometry of a 2-D convolution: the window's sweep over an image, a band of its rows, its
//! zero-padded input and the phase planes of the planar depthwise kernel, and an image's strides.

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
    pub(super) fn rows(&self, oy: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.kernel_height).filter_map(move |ky| {
            let iy = (oy * self.stride + ky).checked_sub(self.pad_top)?;
            (iy < self.in_height).then_some((ky, iy))
        })
    }

    /// The taps output pixel (oy, ox) uses, as (tap = ky·KW + kx, input pixel = iy·W + ix) pairs;
    /// taps over the zero padding are left out.
    #[inline(always)]
    pub(super) fn taps(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
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
    pub(super) fn visit_taps(&self, oy: usize, ox: usize, mut visit: impl FnMut(usize, usize)) {
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
    pub(super) fn interior_along(&self, pad: usize, input: usize, kernel: usize, output: usize) -> std::ops::Range<usize> {
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
