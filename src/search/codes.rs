//! Binary codes as 64-bit words, their Hamming distances (a popcount scan, AVX-512 VPOPCNTDQ where the
//! CPU has it) and the multi-index that finds every code within a radius without scanning them all:
//! what search and grouping (the parent module) compare rows by.

use crate::error::Error;

/// Codes as 64-bit words (a 256-bit code is 4 words), packed back to back.
#[derive(Debug, Clone, Default)]
pub struct Codes {
    pub(super) words_per_code: usize,
    pub(super) words: Vec<u64>,
}

impl Codes {
    pub fn new(bits: usize) -> Codes {
        Codes { words_per_code: bits.div_ceil(64), words: Vec::new() }
    }

    /// Appends a code given as packed bytes (the Parquet `code` column's layout).
    pub fn push(&mut self, bytes: &[u8]) {
        self.words.extend(to_words(bytes, self.words_per_code));
    }

    pub fn len(&self) -> usize {
        self.words.len() / self.words_per_code.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u64] {
        &self.words[i * self.words_per_code..(i + 1) * self.words_per_code]
    }

    pub fn bits(&self) -> usize {
        self.words_per_code * 64
    }

    /// The Hamming distance from `query` to every code, in order.
    pub fn distances(&self, query: &[u64], out: &mut Vec<u32>) {
        out.clear();
        out.resize(self.len(), 0);
        distances(&self.words, self.words_per_code, query, out);
    }

    /// [`Codes::distances`] for several queries in one pass: the codes are read in blocks that stay in
    /// L2 while every query is compared with them, so a scan is no longer bound by memory bandwidth.
    pub fn distances_many(&self, queries: &[Vec<u64>], out: &mut [Vec<u32>]) {
        const BLOCK: usize = 4096; // codes: 128 KiB of 256-bit codes
        for o in out.iter_mut() {
            o.clear();
            o.resize(self.len(), 0);
        }
        let w = self.words_per_code;
        for start in (0..self.len()).step_by(BLOCK) {
            let end = (start + BLOCK).min(self.len());
            for (query, o) in queries.iter().zip(out.iter_mut()) {
                distances(&self.words[start * w..end * w], w, query, &mut o[start..end]);
            }
        }
    }
}

/// Packed code bytes → 64-bit words, 8 bytes each (little-endian), zero-padded; the Hamming distance
/// between two codes does not depend on how their bits are arranged, only that both are arranged alike.
pub fn to_words(bytes: &[u8], words: usize) -> Vec<u64> {
    (0..words)
        .map(|w| {
            let mut chunk = [0u8; 8];
            let part = bytes.get(w * 8..).unwrap_or(&[]);
            let n = part.len().min(8);
            chunk[..n].copy_from_slice(&part[..n]);
            u64::from_le_bytes(chunk)
        })
        .collect()
}

/// Parses a code written as hex (two digits a byte, as `imgfeat show` prints it).
pub fn parse_hex(hex: &str) -> Result<Vec<u8>, Error> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Config(format!("--code must be hex digits, two per byte; got {hex:?}")));
    }
    Ok((0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits")).collect())
}

pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The scan behind exact search: AVX-512 VPOPCNTDQ (eight codes at a time) where the CPU has it, else
/// the POPCNT instruction (the x86-64 baseline counts bits in software, several times slower).
fn distances(words: &[u64], words_per_code: usize, query: &[u64], out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(words_per_code, 1 | 2 | 4) && crate::cpu::features().vector_popcount {
        // SAFETY: the CPU has AVX-512F, VPOPCNTDQ, AVX2 and POPCNT (`vector_popcount` is set only
        // under `Isa::Avx512`, which includes AVX2, and with VPOPCNTDQ and POPCNT detected).
        return unsafe { vpopcnt::distances(words, words_per_code, query, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::features().popcount {
        /// # Safety
        /// The CPU has POPCNT.
        #[target_feature(enable = "popcnt")]
        unsafe fn with_popcnt(words: &[u64], words_per_code: usize, query: &[u64], out: &mut [u32]) {
            distances_portable(words, words_per_code, query, out)
        }
        // SAFETY: the CPU has POPCNT (`popcount` is set only where it was detected).
        return unsafe { with_popcnt(words, words_per_code, query, out) };
    }
    distances_portable(words, words_per_code, query, out)
}

#[inline(always)]
fn distances_portable(words: &[u64], words_per_code: usize, query: &[u64], out: &mut [u32]) {
    if words_per_code == 4 {
        // 256-bit codes, the default: unrolled.
        let q: [u64; 4] = query.try_into().expect("4 words");
        for (code, d) in words.chunks_exact(4).zip(out.iter_mut()) {
            *d = (code[0] ^ q[0]).count_ones() + (code[1] ^ q[1]).count_ones() + (code[2] ^ q[2]).count_ones() + (code[3] ^ q[3]).count_ones();
        }
    } else {
        for (code, d) in words.chunks_exact(words_per_code).zip(out.iter_mut()) {
            *d = hamming(code, query);
        }
    }
}

/// Eight codes per step: XOR with the query, VPOPCNTQ counts every 64-bit word, then the words of each
/// code are summed with in-lane and cross-lane shuffles and the eight sums narrowed to u32 in order.
#[cfg(target_arch = "x86_64")]
mod vpopcnt {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F, VPOPCNTDQ, AVX2 and POPCNT (`cpu::features().vector_popcount`).
    /// `words_per_code` must be 1, 2 or 4 (asserted).
    #[target_feature(enable = "avx512f,avx512vpopcntdq,avx2,popcnt")]
    pub unsafe fn distances(words: &[u64], words_per_code: usize, query: &[u64], out: &mut [u32]) {
        let w = words_per_code;
        assert!(matches!(w, 1 | 2 | 4) && query.len() == w && words.len() == out.len() * w, "code layout");
        let full = out.len() / 8 * 8;
        let q = |i: usize| query[i % w] as i64;
        let repeated = _mm512_set_epi64(q(7), q(6), q(5), q(4), q(3), q(2), q(1), q(0));
        // Where each code's sum lands after the shuffles below, to put them back in order.
        let order = match w {
            1 => _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            2 => _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7),
            _ => _mm256_setr_epi32(0, 2, 1, 3, 4, 6, 5, 7),
        };
        for start in (0..full).step_by(8) {
            let block = words[start * w..(start + 8) * w].as_ptr() as *const i64;
            // SAFETY (all loads): the slice above holds 8 × w words, read as w vectors of 8.
            let count = |v: usize| _mm512_popcnt_epi64(_mm512_xor_si512(unsafe { _mm512_loadu_epi64(block.add(v * 8)) }, repeated));
            let sums = match w {
                1 => count(0),
                2 => {
                    // Per 128-bit lane k: [code k, code 4 + k].
                    let (a, b) = (count(0), count(1));
                    _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
                }
                _ => {
                    // Halves of codes (0, 1 | 2, 3) then (4, 5 | 6, 7), paired across lanes: the order
                    // 0, 2, 1, 3, 4, 6, 5, 7.
                    let (a, b, c, d) = (count(0), count(1), count(2), count(3));
                    let s1 = _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
                    let s2 = _mm512_add_epi64(_mm512_unpacklo_epi64(c, d), _mm512_unpackhi_epi64(c, d));
                    _mm512_add_epi64(_mm512_shuffle_i64x2::<0x88>(s1, s2), _mm512_shuffle_i64x2::<0xDD>(s1, s2))
                }
            };
            let sums = _mm256_permutevar8x32_epi32(_mm512_cvtepi64_epi32(sums), order);
            // SAFETY: out[start..start + 8] is in bounds (start + 8 ≤ full ≤ out.len()).
            unsafe { _mm256_storeu_si256(out[start..start + 8].as_mut_ptr() as *mut __m256i, sums) };
        }
        super::distances_portable(&words[full * w..], w, query, &mut out[full..]);
    }
}

/// Multi-index hashing: each code is split into 16-bit substrings, one hash table per substring
/// position. Two codes within distance r agree to within ⌊r/m⌋ bits on at least one of the m
/// substrings (pigeonhole), so probing every table with the query's substring and its variants within
/// that many bits finds every code within r, exactly.
#[derive(Debug)]
pub struct MultiIndex {
    /// Per substring position, 65,536 buckets of code numbers.
    tables: Vec<Vec<Vec<u32>>>,
}

impl MultiIndex {
    pub fn build(codes: &Codes) -> MultiIndex {
        let chunks = codes.bits() / 16;
        let mut tables = vec![vec![Vec::new(); 1 << 16]; chunks];
        for i in 0..codes.len() {
            let code = codes.get(i);
            for (c, table) in tables.iter_mut().enumerate() {
                table[substring(code, c) as usize].push(i as u32);
            }
        }
        MultiIndex { tables }
    }

    /// Every code within `radius` of `query`, with its distance (in no particular order). `seen` is
    /// scratch of the codes' length, all `false`, left so.
    pub fn within(&self, codes: &Codes, query: &[u64], radius: u32, seen: &mut Vec<bool>) -> Vec<(u32, u32)> {
        seen.resize(codes.len(), false);
        let per_chunk = radius / self.tables.len() as u32;
        let mut found = Vec::new();
        let mut touched = Vec::new();
        for (c, table) in self.tables.iter().enumerate() {
            let key = substring(query, c);
            for_each_within(key, per_chunk.min(16), &mut |variant| {
                for &id in &table[variant as usize] {
                    if !std::mem::replace(&mut seen[id as usize], true) {
                        touched.push(id);
                        let d = hamming(codes.get(id as usize), query);
                        if d <= radius {
                            found.push((id, d));
                        }
                    }
                }
            });
        }
        for id in touched {
            seen[id as usize] = false;
        }
        found
    }
}

fn substring(code: &[u64], c: usize) -> u16 {
    (code[c / 4] >> ((c % 4) * 16)) as u16
}

/// Calls `visit` with every 16-bit value within `radius` bits of `key`.
fn for_each_within(key: u16, radius: u32, visit: &mut impl FnMut(u16)) {
    fn flip(value: u16, from_bit: u32, left: u32, visit: &mut impl FnMut(u16)) {
        visit(value);
        if left == 0 {
            return;
        }
        for bit in from_bit..16 {
            flip(value ^ (1 << bit), bit + 1, left - 1, visit);
        }
    }
    flip(key, 0, radius, visit);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::search) fn random_codes(n: usize, seed: u64) -> Codes {
        let mut codes = Codes::new(256);
        let mut state = seed;
        for _ in 0..n {
            let bytes: Vec<u8> = (0..32)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 33) as u8
                })
                .collect();
            codes.push(&bytes);
        }
        codes
    }

    #[test]
    fn hex_and_words() {
        assert_eq!(parse_hex("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(parse_hex("0g").is_err() && parse_hex("abc").is_err());
        assert_eq!(to_words(&[1, 0, 0, 0, 0, 0, 0, 0, 2], 2), vec![1, 2]);
        assert_eq!(hamming(&[0b1011, 0], &[0b0001, 1 << 63]), 3);
    }

    #[test]
    fn batched_distances_equal_single_ones() {
        let codes = random_codes(10_000, 3);
        let queries: Vec<Vec<u64>> = [5, 77, 9999].iter().map(|&i| codes.get(i).to_vec()).collect();
        let mut many = vec![Vec::new(); 3];
        codes.distances_many(&queries, &mut many);
        let mut one = Vec::new();
        for (query, batched) in queries.iter().zip(&many) {
            codes.distances(query, &mut one);
            assert_eq!(&one, batched);
        }
    }

    #[test]
    fn multi_index_finds_exactly_what_a_scan_finds() {
        let mut codes = random_codes(3000, 7);
        // Plant near-copies of code 0 at distances 1..40.
        let base = codes.get(0).to_vec();
        for d in 1..=40u32 {
            let mut near = base.clone();
            for bit in 0..d {
                near[(bit * 7 % 256 / 64) as usize] ^= 1 << (bit * 7 % 64);
            }
            let bytes: Vec<u8> = near.iter().flat_map(|w| w.to_le_bytes()).collect();
            codes.push(&bytes);
        }
        let multi = MultiIndex::build(&codes);
        let mut seen = Vec::new();
        let mut scan = Vec::new();
        for radius in [0, 5, 16, 31, 40, 70] {
            for q in [0, 1, 2999, 3010] {
                let query = codes.get(q).to_vec();
                let mut found: Vec<(u32, u32)> = multi.within(&codes, &query, radius, &mut seen);
                found.sort();
                codes.distances(&query, &mut scan);
                let expected: Vec<(u32, u32)> = scan.iter().enumerate().filter(|(_, &d)| d <= radius).map(|(i, &d)| (i as u32, d)).collect();
                assert_eq!(found, expected, "radius {radius}, query {q}");
                assert!(seen.iter().all(|s| !s));
            }
        }
    }

    #[test]
    fn the_avx512_scan_equals_the_portable_one_for_every_code_length() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::cpu::features().vector_popcount {
                eprintln!("SKIPPED part: this CPU has no AVX-512 VPOPCNTDQ; only the portable scan is tested");
                return;
            }
            let codes = random_codes(1003, 5); // not a multiple of 8: the tail goes through the portable loop
            for words_per_code in [1, 2, 4] {
                let words: Vec<u64> = codes.words.chunks_exact(4).flat_map(|c| c[..words_per_code].to_vec()).collect();
                let query = &words[17 * words_per_code..18 * words_per_code];
                let mut expected = vec![0; 1003];
                distances_portable(&words, words_per_code, query, &mut expected);
                let mut fast = vec![u32::MAX; 1003];
                // SAFETY: checked `available` above.
                unsafe { vpopcnt::distances(&words, words_per_code, query, &mut fast) };
                assert_eq!(fast, expected, "{} bits", words_per_code * 64);
                assert_eq!(fast[17], 0);
            }
        }
    }
}
