//! int8 rows are the same bits whichever kernels made them (issue 21): AVX-512 VNNI, AVX-VNNI or
//! AVX2 products, and the x86-64 baseline's. Integer products are exact, and every f32 step around them (the
//! stem, depthwise convolutions, dequantisation, f32 products, the detector's head) adds the same
//! products in the same order, fused, on every instruction set, so a cluster of mixed CPUs gives one
//! code per photo. Each path this CPU has is forced with `IMGFEAT_MAX_ISA` and the tables compared
//! value by value, bit for bit.

mod common;

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use imgfeat::config::Precision;
use imgfeat::cpu::{self, Isa};
use imgfeat::features::FeaturesReader;

/// The fixtures and, with `../shared/data`, the first 24 ImageNet samples and the odd formats.
fn photos(dir: &Path) -> PathBuf {
    let folder = common::fixture_folder(dir, &["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]);
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    match std::fs::read_dir(shared.join("imagenet-sample")) {
        Ok(entries) => {
            let mut more: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
            more.sort();
            for path in more.into_iter().take(24) {
                std::fs::copy(&path, folder.join(path.file_name().unwrap())).unwrap();
            }
        }
        Err(_) => common::skipped(format_args!("SKIPPED part: ../shared/data is absent; comparing on the 4 fixtures only")),
    }
    folder
}

/// Every value of the table but the kernels each row names (`arithmetic`: compared with the
/// provenance's below), rows in path order, floats as their bits (a formatter's shortest round-trip
/// text, which tells apart any two distinct floats, -0 from +0 included).
fn cells(table: &Path) -> Vec<Vec<String>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in FeaturesReader::open(table).unwrap().batches() {
        let batch: RecordBatch = batch.unwrap();
        let schema = batch.schema();
        let values = schema.fields().iter().zip(batch.columns()).filter(|(field, _)| field.name() != "arithmetic").map(|(_, column)| column);
        let formatters: Vec<ArrayFormatter> = values.map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
        for row in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<String>>());
        }
    }
    rows.sort();
    rows
}

#[test]
fn int8_rows_are_the_same_bits_on_every_instruction_set() {
    let dir = common::temp_dir("int8-identity");
    let folder = photos(&dir);
    let features = cpu::features();
    // (cap, the kernels the table must name)
    let mut paths = Vec::new();
    if features.isa == Isa::Avx512 {
        paths.push(("avx512", if features.int8_products { "avx512-vnni" } else { "avx512-int8" }));
    } else {
        common::skipped(format_args!("SKIPPED part: this CPU has no AVX-512, so its AVX-512 and VNNI kernels are not compared"));
    }
    if features.isa >= Isa::Avx2Fma {
        // A CPU without AVX-512 runs AVX-VNNI where it has it (its `vpmaddwd` kernel otherwise, which
        // the unit tests compare with the others bit for bit).
        paths.push(("avx2", if features.avx_vnni_products { "avx2-avx-vnni" } else { "avx2-int8" }));
    }
    paths.push(("baseline", "baseline-int8"));
    let mut tables = Vec::new();
    for (cap, kernels) in &paths {
        let table = dir.join(format!("{cap}.parquet"));
        let out = common::imgfeat()
            .env("IMGFEAT_MAX_ISA", cap)
            .args(["extract", "--threads", "1", "--precision", "int8", "-o"])
            .arg(&table)
            .arg(&folder)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cap}: {stderr}");
        assert!(!stderr.contains("runs in f32"), "{cap}: int8 fell back to f32: {stderr}");
        assert_eq!(stderr.contains("runs int8 on the x86-64 baseline"), *cap == "baseline", "{cap}: the baseline's int8 is slow, and says so: {stderr}");
        let arithmetic = FeaturesReader::open(&table).unwrap().provenance().unwrap().unwrap().arithmetic.unwrap();
        assert_eq!((arithmetic.precision, arithmetic.kernels.as_str()), (Precision::Int8, *kernels), "{cap}");
        tables.push((cap, cells(&table)));
    }
    let (first_cap, first) = &tables[0];
    assert!(first.len() >= 4, "a row per photo");
    for (cap, rows) in &tables[1..] {
        assert_eq!(rows.len(), first.len(), "{cap} against {first_cap}: row counts");
        for (a, b) in first.iter().zip(rows) {
            assert!(a == b, "{cap} against {first_cap}: {} differs\n{a:?}\n{b:?}", a[0]);
        }
    }
    eprintln!("int8: {} rows the same bits under {}", first.len(), paths.iter().map(|(cap, _)| *cap).collect::<Vec<_>>().join(", "));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The check above could fail: in f32, whose products and stems run other kernels on other
/// instruction sets, the same photos differ between AVX-512 and AVX2.
#[test]
fn f32_rows_differ_between_instruction_sets_so_the_comparison_can_fail() {
    if cpu::features().isa != Isa::Avx512 {
        common::skipped(format_args!("SKIPPED: this CPU has no AVX-512 to compare AVX2's f32 rows with"));
        return;
    }
    let dir = common::temp_dir("f32-differs");
    let folder = common::fixture_folder(&dir, &["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]);
    let mut tables = Vec::new();
    for cap in ["avx512", "avx2"] {
        let table = dir.join(format!("{cap}.parquet"));
        let out = common::imgfeat().env("IMGFEAT_MAX_ISA", cap).args(["extract", "--precision", "f32", "-o"]).arg(&table).arg(&folder).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        tables.push(cells(&table));
    }
    assert_ne!(tables[0], tables[1], "f32 rows of AVX-512 and AVX2 kernels were expected to differ in rounding");
    std::fs::remove_dir_all(&dir).unwrap();
}
