//! Hamming search over one million 256-bit codes (synthetic, uniformly random) on one thread: the
//! exact scan (throughput in code comparisons per second), one query and 16 at once, and multi-index
//! radius queries at dedup's two candidate radii (throughput: the codes they stand in for). Baseline: a plain scalar scan with the
//! POPCNT instruction (`count_ones` on each word), what a straightforward implementation does.
//!
//!     cargo bench --bench search

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imgfeat::search::{hamming, Codes, MultiIndex};

const CODES: usize = 1_000_000;

fn random_codes(n: usize) -> Codes {
    let mut codes = Codes::new(256);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = [0u8; 32];
    for _ in 0..n {
        for b in bytes.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        codes.push(&bytes);
    }
    codes
}

/// The baseline: one code at a time, word by word.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "popcnt"))]
unsafe fn scalar_scan(codes: &Codes, query: &[u64], out: &mut Vec<u32>) {
    out.clear();
    out.extend((0..codes.len()).map(|i| hamming(codes.get(i), query)));
}

fn search(c: &mut Criterion) {
    let codes = random_codes(CODES);
    let query = codes.get(12_345).to_vec();
    let mut distances = Vec::new();
    let mut group = c.benchmark_group("search");
    group.sample_size(20);
    group.throughput(Throughput::Elements(CODES as u64));
    assert!(std::is_x86_feature_detected!("popcnt"), "the baseline needs POPCNT");
    // SAFETY: the CPU has POPCNT (asserted above).
    group.bench_function("baseline: scalar POPCNT scan, 1M codes", |b| b.iter(|| unsafe { scalar_scan(&codes, black_box(&query), &mut distances) }));
    group.bench_function("exact scan, 1M codes", |b| b.iter(|| codes.distances(black_box(&query), &mut distances)));
    let queries: Vec<Vec<u64>> = (0..16).map(|i| codes.get(i * 1000).to_vec()).collect();
    let mut many = vec![Vec::new(); queries.len()];
    group.throughput(Throughput::Elements((CODES * queries.len()) as u64));
    group.bench_function("exact scan, 16 queries at once, 1M codes", |b| b.iter(|| codes.distances_many(black_box(&queries), &mut many)));
    group.throughput(Throughput::Elements(CODES as u64));
    let multi = MultiIndex::build(&codes);
    let mut seen = Vec::new();
    // 24: `imgfeat dedup --no-verify`'s candidate radius; 47: the default (verified) rule's.
    for radius in [24, 47] {
        group.bench_function(format!("multi-index, radius {radius}, 1M codes"), |b| b.iter(|| multi.within(&codes, black_box(&query), radius, &mut seen)));
    }
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
