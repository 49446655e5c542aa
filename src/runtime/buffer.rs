//! f32 storage that starts on a 64-byte boundary, and the views of f32 buffers as bytes or halves
//! in which the int8 and bf16 products keep encoded activations. The kernels load and store whole
//! AVX-512 vectors at multiples of 16 values from a buffer's start; on a buffer from the global
//! allocator (16-byte aligned) each of those straddles two cache lines, which costs a second access
//! per load or store.

use std::ops::{Deref, DerefMut};

/// One cache line of values.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A fixed-length, zero-initialised, 64-byte-aligned run of f32 values, used as a slice.
#[derive(Debug, Clone, Default)]
pub struct AlignedBuffer {
    lines: Vec<Line>,
    len: usize,
}

/// Values per cache line: offsets into an [`AlignedBuffer`] that are multiples of this stay aligned.
pub const LINE_FLOATS: usize = 16;

impl AlignedBuffer {
    pub fn zeroed(len: usize) -> AlignedBuffer {
        AlignedBuffer { lines: vec![Line([0.0; LINE_FLOATS]); len.div_ceil(LINE_FLOATS)], len }
    }
}

impl Deref for AlignedBuffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over 16 f32 with no padding (size 64 = 16·4), so the lines are
        // one contiguous run of 16·lines.len() ≥ len initialised f32 values.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

impl DerefMut for AlignedBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, through the unique borrow of the lines.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// `len` rounded up to whole cache lines: where to split a buffer so that both parts stay aligned.
pub fn whole_lines(len: usize) -> usize {
    len.div_ceil(LINE_FLOATS) * LINE_FLOATS
}

// The executor's buffers and scratch are f32; encoded activations live in them as u8 (int8) or bf16
// (u16), value i's encoding at byte or half i, so that offsets in values hold for either encoding.

/// An f32 buffer's bytes.
pub fn as_bytes(floats: &mut [f32]) -> &mut [u8] {
    // SAFETY: the bytes lie within the slice, any byte is a valid u8, and the borrow carries over.
    unsafe { std::slice::from_raw_parts_mut(floats.as_mut_ptr() as *mut u8, std::mem::size_of_val(floats)) }
}

/// An f32 buffer's bytes, to read.
pub fn bytes_of(floats: &[f32]) -> &[u8] {
    // SAFETY: the bytes lie within the slice, any byte is a valid u8, and the borrow carries over.
    unsafe { std::slice::from_raw_parts(floats.as_ptr() as *const u8, std::mem::size_of_val(floats)) }
}

/// An f32 buffer's halves.
pub fn as_halves(floats: &mut [f32]) -> &mut [u16] {
    // SAFETY: the halves lie within the slice, u16 needs no more alignment than f32, any bit
    // pattern is a valid u16, and the borrow carries over.
    unsafe { std::slice::from_raw_parts_mut(floats.as_mut_ptr() as *mut u16, floats.len() * 2) }
}

/// An f32 buffer's halves, to read.
pub fn halves_of(floats: &[f32]) -> &[u16] {
    // SAFETY: as for `as_halves`, read-only.
    unsafe { std::slice::from_raw_parts(floats.as_ptr() as *const u16, floats.len() * 2) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_of_the_given_length() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let mut buffer = AlignedBuffer::zeroed(len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&v| v == 0.0));
            assert_eq!(buffer.as_ptr() as usize % 64, 0);
            buffer.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
            assert_eq!(buffer.last().copied(), len.checked_sub(1).map(|i| i as f32));
        }
        assert_eq!((whole_lines(0), whole_lines(1), whole_lines(16), whole_lines(17)), (0, 16, 16, 32));
    }
}
