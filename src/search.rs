//! Hamming search and near-duplicate groups over the binary codes. A row carries two codes (its main
//! object's and the whole image's), and a near-duplicate can match on either: a crop of a photo
//! matches the original's object code, the photo pasted onto a new background matches through the
//! object code, a flipped or padded copy through the whole-image code. So every search compares all
//! pairs of codes between the query and a row and ranks rows by the best pair. Rows also carry the
//! photos found pasted into them (insets), which grouping compares with other rows' whole images.
//!
//! Exact search scans every code with the CPU's popcount; [`MultiIndex`] (Norouzi et al.'s multi-index
//! hashing) finds every code within a radius by probing 16-bit substrings instead, which for
//! near-duplicate radii touches a small fraction of a large collection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use rayon::prelude::*;

use crate::error::Error;
use crate::features::read::conform;
use crate::features::{FeaturesReader, Provenance, PROVENANCE_KEY};
use crate::pipeline::QueryRecord;

mod codes;
pub use codes::{hamming, parse_hex, to_words, Codes, MultiIndex};

/// One row of a features Parquet file, as search needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedRow {
    pub path: String,
    pub class_name: Option<String>,
    /// The arithmetic the row was made in (`bf16 (avx512-bf16)`), when the table says.
    pub arithmetic: Option<String>,
}

/// The codes (and features, for re-ranking) of a features Parquet file: each row's object code and
/// whole-image code, whichever it has.
#[derive(Debug)]
pub struct Index {
    pub rows: Vec<IndexedRow>,
    codes: Codes,
    /// The row each code belongs to.
    owner: Vec<u32>,
    /// Whether each code stands for a whole image: a row's whole-image code, or its object code when
    /// that is the same (nothing detected, or the object fills the photo). Verification asks more of
    /// two object codes than of two whole images (see [`Verification`]).
    whole: Vec<bool>,
    /// Each code's L2-normalised feature (dim values per code), when the file has them.
    features: Vec<f32>,
    dim: usize,
    /// The fingerprint of the projection that made the codes, when the table records it.
    projection: Option<String>,
    /// The photos found pasted into rows (the table's `insets`): kept apart from the rows' own codes,
    /// as only grouping compares them, and only with whole images (see [`DuplicateRule`]).
    insets: Insets,
}

/// Inset codes, the row each belongs to, and their features (`Index.dim` values each).
#[derive(Debug, Default)]
struct Insets {
    codes: Codes,
    owner: Vec<u32>,
    features: Vec<f32>,
}

/// When two rows are near-duplicates (`imgfeat dedup`, `Index.duplicate_groups` in Python).
///
/// Rows carrying the same code are always joined. Two different codes within `max_distance` bits
/// are candidates; with `verify` (the default) they are joined only when the cosine of their features
/// reaches the threshold [`Verification`] sets for their kinds, without it every candidate pair is. A
/// code that several rows carry is represented by its first row in path order (object code before
/// whole-image code), so the rule depends only on the table's contents. With `verify`, a row's insets
/// (photos found pasted into it) are candidates too, against every other row's whole-image codes,
/// joined at [`Verification::inset`]: a photo pasted into a collage or onto another photo is grouped
/// with its original that way. Insets are never compared with object codes or with other insets
/// (two flat stickers, two text cards look alike), nor without verification. Groups are the connected
/// components (union-find).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DuplicateRule {
    pub max_distance: u32,
    pub verify: Option<Verification>,
}

impl Default for DuplicateRule {
    /// Candidates within 47 bits, verified by [`Verification::default`] (calibrated by
    /// scripts/tune_dedup.py, see there).
    fn default() -> DuplicateRule {
        DuplicateRule::new(None, true)
    }
}

impl DuplicateRule {
    /// The candidate distance of the verified rule when none is given. Wider radii let more candidates
    /// through, but the pairs they add are mostly edited copies of different photos that share what the
    /// edit added (a sticker, a border, blur): on photos 1–300 with 20 edits each, calibrated alike
    /// (scripts/tune_dedup.py), 63 bits group 88.6 % of the copies against 87.2 % at 47 (rows' insets included), while the cost
    /// grows fast: 16 bands of a 256-bit code are each probed within ⌊47/16⌋ = 2 bits (137 keys), where
    /// 63 bits take 3 bits (697 keys per band; the multi-index here, Spark's band join).
    pub const VERIFIED_DISTANCE: u32 = 47;
    /// The distance of the rule without verification when none is given: past it, different photos
    /// start to share groups (EVALUATION.md).
    pub const CODES_ONLY_DISTANCE: u32 = 24;

    /// The rule `imgfeat dedup [--max-distance N] [--no-verify]` applies: `max_distance` or the
    /// default of its kind, verified by [`Verification::default`] or by the codes alone.
    pub fn new(max_distance: Option<u32>, verify: bool) -> DuplicateRule {
        match verify {
            true => DuplicateRule {
                max_distance: max_distance.unwrap_or(Self::VERIFIED_DISTANCE),
                verify: Some(Verification::default()),
            },
            false => DuplicateRule { max_distance: max_distance.unwrap_or(Self::CODES_ONLY_DISTANCE), verify: None },
        }
    }
}

/// Least cosine between the features of two candidate codes for them to be joined, by the kinds of
/// the two codes. Embeddings of small object crops look alike across photos (a blurred bird and
/// another blurred bird), so two object codes must agree more than two whole images do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verification {
    pub whole: f32,
    pub object: f32,
    pub mixed: f32,
    /// A row's inset against another row's whole image.
    pub inset: f32,
}

impl Default for Verification {
    /// Calibrated by scripts/tune_dedup.py on photos 1–300 of the evaluation set and 20 edits of each:
    /// of the rules that join no two originals, neither at their thresholds nor with each lowered by
    /// 0.03, the strictest that groups within half a point as many copies with their original as the
    /// best of them; the inset threshold the same way once the other three were set (EVALUATION.md has
    /// the held-out figures).
    fn default() -> Verification {
        Verification { whole: 0.68, object: 0.95, mixed: 0.76, inset: 0.78 }
    }
}

impl Verification {
    fn threshold(&self, a_whole: bool, b_whole: bool) -> f32 {
        match (a_whole, b_whole) {
            (true, true) => self.whole,
            (false, false) => self.object,
            _ => self.mixed,
        }
    }
}

/// A search result: a row, its best Hamming distance over the code pairs, and the best cosine
/// similarity of the matching features.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub distance: u32,
    pub cosine: Option<f32>,
}

/// A query: its codes (object, whole image, insets, or one given as hex) and their features when known,
/// and those of the image turned by a quarter either way.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub codes: Vec<Vec<u8>>,
    pub features: Vec<Vec<f32>>,
    pub turned_codes: Vec<Vec<u8>>,
    pub turned_features: Vec<Vec<f32>>,
}

/// How many bits nearer a turned query's best row must be than the upright query's for search to use
/// the turned codes. A photo rotated by 90° is near-identical to its original once turned back, while
/// turning any other query only adds chances for unrelated rows to come near: on the evaluation set
/// (EVALUATION.md) this margin fixed the 90° rotations and changed no other edit's ranking.
const TURNED_MARGIN: u32 = 5;

impl From<QueryRecord> for Query {
    /// A photo's query: its object and whole-image codes and those of the photos pasted into it.
    fn from(found: QueryRecord) -> Query {
        let record = found.record;
        Query {
            codes: [record.code, record.whole_code].into_iter().flatten().chain(found.insets.iter().filter_map(|i| i.code.clone())).collect(),
            features: [record.feature, record.whole_feature].into_iter().flatten().chain(found.insets.into_iter().map(|i| i.feature)).collect(),
            turned_codes: found.turned.iter().filter_map(|t| t.code.clone()).collect(),
            turned_features: found.turned.into_iter().map(|t| t.feature).collect(),
        }
    }
}

impl Index {
    /// Reads a features table (see [`FeaturesReader`]: the CLI's file or a Spark job's directory);
    /// rows without codes (errors) are skipped. Rows are kept in path order, whatever order the table
    /// has them in (Spark's part files come in any order), so that every answer depends only on the
    /// table's contents.
    /// Part files whose codes come from different projections are refused.
    pub fn from_table(path: &Path) -> Result<Index, Error> {
        let reader = FeaturesReader::open(path)?;
        let made = reader.provenance()?;
        let index = Index::from_conformed(reader.batches())?;
        Ok(Index { projection: made.and_then(|made| made.projection), ..index })
    }

    /// The same from a table in memory (the Python API's `pyarrow.Table`), in any shape the reader
    /// accepts from a file; pyarrow keeps the file's provenance in the schema's metadata.
    pub fn from_batches(batches: impl IntoIterator<Item = RecordBatch>) -> Result<Index, Error> {
        let mut batches = batches.into_iter().peekable();
        let recorded = batches.peek().and_then(|batch| batch.schema().metadata().get(PROVENANCE_KEY).cloned());
        let source = Path::new("(in memory)");
        let made = recorded.map(|json| Provenance::parse(&json, source)).transpose()?;
        let mut code_bytes = None;
        let index = Index::from_conformed(batches.map(|batch| conform(&batch, &mut code_bytes, source)))?;
        Ok(Index { projection: made.and_then(|made| made.projection), ..index })
    }

    /// Refuses to compare the table's codes with `bits`-bit codes made by the projection `fingerprint`
    /// names ([`Projection::fingerprint`](crate::codes::Projection::fingerprint)) when the table's are
    /// of another length or record another projection: their bits mean different things, so every
    /// ranking would be noise.
    pub fn check_comparable(&self, bits: usize, fingerprint: Option<&str>) -> Result<(), Error> {
        match (self.projection.as_deref(), fingerprint) {
            _ if bits != self.code_bits() => {
                Err(Error::Config(format!("the query codes have {bits} bits, the table's {}: set codes.bits to {}", self.code_bits(), self.code_bits())))
            }
            (Some(table), Some(ours)) if table != ours => Err(Error::Config(format!(
                "the table's codes come from projection {table}, this run's from projection {ours}: search with the \
                 settings the table was made with (codes.projection), or extract the table again"
            ))),
            _ => Ok(()),
        }
    }

    fn from_conformed(batches: impl Iterator<Item = Result<RecordBatch, Error>>) -> Result<Index, Error> {
        let mut index = Index {
            rows: Vec::new(),
            codes: Codes::default(),
            owner: Vec::new(),
            whole: Vec::new(),
            features: Vec::new(),
            dim: 0,
            projection: None,
            insets: Insets::default(),
        };
        // Inset codes and features in the order read; kept once the rows' feature length is known.
        let mut insets: Vec<(u32, Vec<u8>, Vec<f32>)> = Vec::new();
        for batch in batches {
            let batch = batch?;
            let column = |name: &str| batch.column_by_name(name).expect("the features schema has every column");
            let paths = column("path").as_string::<i32>();
            let classes = column("class_name").as_string::<i32>();
            let arithmetics = column("arithmetic").as_string::<i32>();
            let pairs = [("code", "feature", false), ("whole_code", "whole_feature", true)]
                .map(|(codes, features, whole)| (column(codes).as_fixed_size_binary(), column(features).as_list::<i32>(), whole));
            let row_insets = column("insets").as_list::<i32>();
            for r in 0..batch.num_rows() {
                let row = index.rows.len() as u32;
                let mut any = false;
                for (codes, features, whole) in &pairs {
                    if codes.is_null(r) {
                        continue;
                    }
                    let code = codes.value(r);
                    if index.codes.words_per_code == 0 {
                        index.codes = Codes::new(code.len() * 8);
                    }
                    // Object and whole codes are often the same (nothing detected): index it once.
                    if any && index.codes.get(index.codes.len() - 1) == to_words(code, index.codes.words_per_code).as_slice() {
                        *index.whole.last_mut().expect("a code was pushed") = true;
                        continue;
                    }
                    index.codes.push(code);
                    index.owner.push(row);
                    index.whole.push(*whole);
                    let values = (!features.is_null(r)).then(|| features.value(r));
                    let feature: &[f32] = values.as_ref().map_or(&[], |v| v.as_primitive::<Float32Type>().values());
                    if index.dim == 0 {
                        index.dim = feature.len();
                    }
                    if feature.len() == index.dim && index.dim > 0 {
                        index.features.extend_from_slice(feature);
                    } else {
                        index.dim = 0; // missing or ragged features: no re-ranking
                        index.features.clear();
                    }
                    any = true;
                }
                if any && row_insets.is_valid(r) {
                    let found = row_insets.value(r);
                    let found = found.as_struct();
                    let (codes, features) = (found.column_by_name("code").expect("an inset has a code").as_fixed_size_binary(), found.column_by_name("feature").expect("an inset has a feature").as_list::<i32>());
                    for i in (0..found.len()).filter(|&i| codes.is_valid(i) && features.is_valid(i)) {
                        let feature = features.value(i);
                        insets.push((row, codes.value(i).to_vec(), feature.as_primitive::<Float32Type>().values().to_vec()));
                    }
                }
                if any {
                    let class_name = (!classes.is_null(r)).then(|| classes.value(r).to_string());
                    let arithmetic = (!arithmetics.is_null(r)).then(|| arithmetics.value(r).to_string());
                    index.rows.push(IndexedRow { path: paths.value(r).to_string(), class_name, arithmetic });
                }
            }
        }
        if index.features.len() != index.codes.len() * index.dim {
            index.features.clear();
            index.dim = 0;
        }
        // Insets are only ever verified: one without a feature of the rows' length cannot be.
        index.insets.codes = Codes::new(index.codes.bits());
        for (row, code, feature) in insets.into_iter().filter(|(_, _, feature)| index.dim > 0 && feature.len() == index.dim) {
            index.insets.codes.push(&code);
            index.insets.owner.push(row);
            index.insets.features.extend_from_slice(&feature);
        }
        if index.rows.windows(2).any(|w| w[0].path > w[1].path) {
            index = index.in_path_order();
        }
        let made_in = index.arithmetics();
        let precisions: BTreeSet<&str> = made_in.iter().filter_map(|(arithmetic, _)| arithmetic.split(' ').next()).collect();
        if precisions.len() > 1 {
            let counts: Vec<String> = made_in.iter().map(|(arithmetic, rows)| format!("{rows} in {arithmetic}")).collect();
            log::warn!(
                "the table's rows were made in {} precisions ({}): rows of different precisions differ by more than \
                 rounding, so copies made in one may be missed against rows made in another",
                precisions.len(),
                counts.join(", ")
            );
        }
        Ok(index)
    }

    /// How many rows were made in each arithmetic (`bf16 (avx512-bf16)`, …), as the table's
    /// `arithmetic` column says, most first: a Spark job's executors on different CPUs may have made
    /// its rows in different precisions or kernels. Rows of tables from before the column are left out.
    pub fn arithmetics(&self) -> Vec<(&str, usize)> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for arithmetic in self.rows.iter().filter_map(|row| row.arithmetic.as_deref()) {
            *counts.entry(arithmetic).or_default() += 1;
        }
        let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
        counts.sort_by_key(|&(_, rows)| std::cmp::Reverse(rows));
        counts
    }

    /// The same index with its rows (and their codes) sorted by path.
    fn in_path_order(self) -> Index {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        order.sort_by(|&a, &b| self.rows[a].path.cmp(&self.rows[b].path));
        let mut codes_of: Vec<Vec<usize>> = vec![Vec::new(); self.rows.len()];
        for (code, &row) in self.owner.iter().enumerate() {
            codes_of[row as usize].push(code);
        }
        let mut sorted = Index {
            rows: Vec::with_capacity(self.rows.len()),
            codes: Codes::new(self.codes.bits()),
            owner: Vec::new(),
            whole: Vec::new(),
            features: Vec::new(),
            dim: self.dim,
            projection: self.projection.clone(),
            insets: Insets::default(),
        };
        let mut new_row_of = vec![0u32; self.rows.len()];
        for (new_row, &old_row) in order.iter().enumerate() {
            new_row_of[old_row] = new_row as u32;
            sorted.rows.push(self.rows[old_row].clone());
            for &code in &codes_of[old_row] {
                sorted.codes.words.extend_from_slice(self.codes.get(code));
                sorted.owner.push(new_row as u32);
                sorted.whole.push(self.whole[code]);
                if self.dim > 0 {
                    sorted.features.extend_from_slice(&self.features[code * self.dim..(code + 1) * self.dim]);
                }
            }
        }
        // Insets join rows whatever order they are compared in: only their owners are renumbered.
        sorted.insets = Insets { owner: self.insets.owner.iter().map(|&row| new_row_of[row as usize]).collect(), ..self.insets };
        sorted
    }

    pub fn code_bits(&self) -> usize {
        self.codes.bits()
    }

    /// The `k` rows nearest to `query` by Hamming distance over all code pairs (exact scan), the first
    /// `rerank` of them re-ordered by cosine similarity of the features when both sides have them.
    /// A query's turned codes count only when its best row by them is [`TURNED_MARGIN`] bits nearer than
    /// by its upright codes; then rows are ranked by all of them.
    pub fn search(&self, query: &Query, k: usize, rerank: usize) -> Vec<Hit> {
        // One pass over the index for the upright and the turned codes together.
        let codes: Vec<&Vec<u8>> = query.codes.iter().chain(&query.turned_codes).collect();
        let [mut best, turned] = self.nearest_per_row(&codes, query.codes.len());
        let mut features: Vec<&[f32]> = query.features.iter().map(Vec::as_slice).collect();
        if !query.turned_codes.is_empty() {
            let nearest = |distances: &[u32]| distances.iter().copied().min().unwrap_or(u32::MAX);
            if nearest(&turned).saturating_add(TURNED_MARGIN) < nearest(&best) {
                best.iter_mut().zip(&turned).for_each(|(b, &t)| *b = (*b).min(t));
                features.extend(query.turned_features.iter().map(Vec::as_slice));
            }
        }
        let mut hits: Vec<Hit> = best.iter().enumerate().filter(|(_, &d)| d != u32::MAX).map(|(row, &distance)| Hit { row, distance, cosine: None }).collect();
        let take = k.max(rerank).min(hits.len());
        if take > 0 {
            hits.select_nth_unstable_by_key(take - 1, |h| (h.distance, h.row));
        }
        hits.truncate(take);
        hits.sort_by_key(|h| (h.distance, h.row));
        self.rerank(&features, &mut hits, rerank);
        hits.truncate(k);
        hits
    }

    /// Each row's smallest Hamming distance to any of the first `split` codes, and to any of the rest
    /// (u32::MAX for none), from one batched scan.
    fn nearest_per_row(&self, codes: &[&Vec<u8>], split: usize) -> [Vec<u32>; 2] {
        let mut best = [vec![u32::MAX; self.rows.len()], vec![u32::MAX; self.rows.len()]];
        let words: Vec<Vec<u64>> = codes.iter().map(|code| to_words(code, self.codes.words_per_code)).collect();
        let mut all = vec![Vec::new(); words.len()];
        self.codes.distances_many(&words, &mut all);
        for (i, distances) in all.iter().enumerate() {
            let best = &mut best[usize::from(i >= split)];
            for (&d, &row) in distances.iter().zip(&self.owner) {
                let slot = &mut best[row as usize];
                *slot = (*slot).min(d);
            }
        }
        best
    }

    /// Fills in cosines with `features` (the query's) and re-orders the first `rerank` hits by them
    /// (Hamming distance breaks ties).
    fn rerank(&self, features: &[&[f32]], hits: &mut [Hit], rerank: usize) {
        if self.dim == 0 || features.iter().all(|f| f.len() != self.dim) {
            return;
        }
        let mut by_row: std::collections::HashMap<usize, f32> = hits.iter().map(|h| (h.row, f32::MIN)).collect();
        for (i, &row) in self.owner.iter().enumerate() {
            if let Some(best) = by_row.get_mut(&(row as usize)) {
                let feature = &self.features[i * self.dim..(i + 1) * self.dim];
                for q in features.iter().filter(|f| f.len() == self.dim) {
                    *best = best.max(q.iter().zip(feature).map(|(a, b)| a * b).sum());
                }
            }
        }
        for hit in hits.iter_mut() {
            hit.cosine = by_row.get(&hit.row).copied().filter(|c| *c > f32::MIN);
        }
        let n = rerank.min(hits.len());
        hits[..n].sort_by(|a, b| b.cosine.partial_cmp(&a.cosine).unwrap_or(std::cmp::Ordering::Equal).then(a.distance.cmp(&b.distance)));
    }

    /// The smallest Hamming distance between any code of row `a` and any code of row `b` (the
    /// distance search and grouping rank by).
    pub fn row_distance(&self, a: usize, b: usize) -> u32 {
        // Codes are stored in row order, so a row's codes are one run of `owner`.
        let codes_of = |row: usize| self.owner.partition_point(|&o| (o as usize) < row)..self.owner.partition_point(|&o| (o as usize) <= row);
        codes_of(a).flat_map(|i| codes_of(b).map(move |j| (i, j))).map(|(i, j)| hamming(self.codes.get(i), self.codes.get(j))).min().unwrap_or(u32::MAX)
    }

    /// Near-duplicate groups under `rule` (see [`DuplicateRule`]): groups of two or more rows, each
    /// sorted, largest first. Codes are compared once per distinct value, so 10,000 copies of one
    /// photo are one code; candidates come from the multi-index when there are many codes.
    pub fn duplicate_groups(&self, rule: &DuplicateRule) -> Result<Vec<Vec<usize>>, Error> {
        if rule.verify.is_some() && self.dim == 0 {
            return Err(Error::Config("the features table has no features (or ragged ones) to verify near-duplicates with: \
                 group by the codes alone (`imgfeat dedup --no-verify`, `verify=False` in Python)"
                .into()));
        }
        let mut groups = UnionFind::new(self.rows.len());
        // Each distinct code, named by its first code entry; rows carrying it are joined to that row.
        let mut first_of: std::collections::HashMap<&[u64], usize> = Default::default();
        let mut distinct = Codes::new(self.codes.bits());
        let mut representative = Vec::new();
        for i in 0..self.codes.len() {
            match first_of.entry(self.codes.get(i)) {
                std::collections::hash_map::Entry::Occupied(first) => groups.join(self.owner[i] as usize, self.owner[*first.get()] as usize),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(i);
                    distinct.words.extend_from_slice(self.codes.get(i));
                    representative.push(i);
                }
            }
        }
        let feature = |code: usize| &self.features[code * self.dim..(code + 1) * self.dim];
        let cosine = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
        let multi = (distinct.len() > MULTI_INDEX_FROM).then(|| MultiIndex::build(&distinct));
        // Joining stays in code order, so the groups do not depend on the threads.
        for start in (0..distinct.len()).step_by(CANDIDATE_CHUNK) {
            let codes = start..(start + CANDIDATE_CHUNK).min(distinct.len());
            let candidates = near_codes(&distinct, multi.as_ref(), &distinct, codes.clone(), rule.max_distance);
            for (i, near) in codes.zip(candidates) {
                let a = representative[i];
                for b in near.into_iter().filter(|&j| j as usize > i).map(|j| representative[j as usize]) {
                    let (row_a, row_b) = (self.owner[a] as usize, self.owner[b] as usize);
                    if groups.same(row_a, row_b) {
                        continue;
                    }
                    let verified = rule.verify.is_none_or(|verify| cosine(feature(a), feature(b)) >= verify.threshold(self.whole[a], self.whole[b]));
                    if verified {
                        groups.join(row_a, row_b);
                    }
                }
            }
        }
        if let Some(verify) = rule.verify {
            let insets = &self.insets;
            let inset_feature = |i: usize| &insets.features[i * self.dim..(i + 1) * self.dim];
            for start in (0..insets.codes.len()).step_by(CANDIDATE_CHUNK) {
                let chunk = start..(start + CANDIDATE_CHUNK).min(insets.codes.len());
                let candidates = near_codes(&distinct, multi.as_ref(), &insets.codes, chunk.clone(), rule.max_distance);
                for (i, near) in chunk.zip(candidates) {
                    let row = insets.owner[i] as usize;
                    for b in near.into_iter().map(|j| representative[j as usize]).filter(|&b| self.whole[b]) {
                        let other = self.owner[b] as usize;
                        if !groups.same(row, other) && cosine(inset_feature(i), feature(b)) >= verify.inset {
                            groups.join(row, other);
                        }
                    }
                }
            }
        }
        Ok(groups.into_groups())
    }
}

/// For each of `queries`' codes in `range`, the ids of `distinct`'s codes within `max_distance` bits,
/// found by the multi-index over them when there is one, by a scan otherwise. The candidate search is
/// most of grouping's time: it runs in parallel, a chunk of codes at a time so that the lists stay small.
fn near_codes(distinct: &Codes, multi: Option<&MultiIndex>, queries: &Codes, range: std::ops::Range<usize>, max_distance: u32) -> Vec<Vec<u32>> {
    range
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(seen, distances), i| {
                let query = queries.get(i);
                match multi {
                    Some(multi) => multi.within(distinct, query, max_distance, seen).into_iter().map(|(id, _)| id).collect(),
                    None => {
                        distinct.distances(query, distances);
                        distances.iter().enumerate().filter(|(_, &d)| d <= max_distance).map(|(id, _)| id as u32).collect()
                    }
                }
            },
        )
        .collect()
}

/// Distinct codes past which candidates are found by the multi-index instead of a scan per code.
const MULTI_INDEX_FROM: usize = 2048;
/// Codes whose candidates are searched at once, in parallel, before they are joined.
const CANDIDATE_CHUNK: usize = 4096;

/// Union-find over rows: the smaller root names a set.
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind { parent: (0..n).collect() }
    }

    fn root(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn same(&mut self, a: usize, b: usize) -> bool {
        self.root(a) == self.root(b)
    }

    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        self.parent[ra.max(rb)] = ra.min(rb);
    }

    /// Sets of two or more, each sorted, largest first (then by first member).
    fn into_groups(mut self) -> Vec<Vec<usize>> {
        let mut sets: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for x in 0..self.parent.len() {
            let r = self.root(x);
            sets.entry(r).or_default().push(x);
        }
        let mut groups: Vec<Vec<usize>> = sets.into_values().filter(|g| g.len() > 1).collect();
        groups.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::codes::tests::random_codes;
    use super::*;

    #[test]
    fn row_distance_is_the_best_pair_over_both_rows_codes() {
        let codes = random_codes(5, 11);
        // Row 0 owns codes 0 and 1, row 1 code 2, row 2 codes 3 and 4.
        let owner = vec![0, 0, 1, 2, 2];
        let rows = (0..3).map(|i| IndexedRow { path: format!("{i}"), class_name: None, arithmetic: None }).collect();
        let index = Index { rows, codes: codes.clone(), owner, whole: vec![true; 5], features: Vec::new(), dim: 0, projection: None, insets: Insets::default() };
        let d = |i: usize, j: usize| hamming(codes.get(i), codes.get(j));
        assert_eq!(index.row_distance(0, 1), d(0, 2).min(d(1, 2)));
        assert_eq!(index.row_distance(0, 2), [d(0, 3), d(0, 4), d(1, 3), d(1, 4)].into_iter().min().unwrap());
        assert_eq!(index.row_distance(2, 0), index.row_distance(0, 2));
        assert_eq!(index.row_distance(1, 1), 0);
    }

    /// An index of rows given as (code, feature, whole-image code?) entries, rows in order.
    fn index_of(entries: &[(usize, Vec<u8>, Vec<f32>, bool)]) -> Index {
        let rows = entries.iter().map(|e| e.0).max().map_or(0, |n| n + 1);
        let mut index = Index {
            rows: (0..rows).map(|i| IndexedRow { path: format!("{i:05}"), class_name: None, arithmetic: None }).collect(),
            codes: Codes::new(entries[0].1.len() * 8),
            owner: Vec::new(),
            whole: Vec::new(),
            features: Vec::new(),
            dim: entries[0].2.len(),
            projection: None,
            insets: Insets::default(),
        };
        for (row, code, feature, whole) in entries {
            index.codes.push(code);
            index.owner.push(*row as u32);
            index.whole.push(*whole);
            index.features.extend(feature);
        }
        index
    }

    /// `code` with its first `n` bits flipped.
    fn flipped(code: &[u8], n: usize) -> Vec<u8> {
        let mut out = code.to_vec();
        for bit in 0..n {
            out[bit / 8] ^= 0x80 >> (bit % 8);
        }
        out
    }

    /// A unit vector at `angle` radians from (1, 0, 0, 0) towards (0, 1, 0, 0): cosines are set exactly.
    fn at(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin(), 0.0, 0.0]
    }

    #[test]
    fn verification_joins_candidates_by_the_cosine_their_kinds_need() {
        let base = vec![0u8; 32];
        let cos = |c: f32| c.acos();
        // Row 0/1: two whole images 40 bits apart, cosine 0.85 (≥ 0.68: joined).
        // Row 2/3: two object codes 40 bits apart, cosine 0.85 (< 0.95: not joined) on other codes.
        // Row 4/5: an object and a whole image, cosine 0.92 (≥ 0.76: joined).
        // Row 6/7: whole images with cosine 0.99 but 70 bits apart (not candidates at 64).
        // Row 8/9: two whole images 40 bits apart, cosine 0.62 (< 0.68: not joined).
        // Row 10/11: an object and a whole image 30 bits apart, cosine 0.72 (< 0.76: not joined).
        let far = |n: usize| flipped(&[0xFFu8; 32], n);
        let entries = vec![
            (0, base.clone(), at(0.0), true),
            (1, flipped(&base, 40), at(cos(0.85)), true),
            (2, far(0), at(0.0), false),
            (3, far(40), at(cos(0.85)), false),
            (4, flipped(&[0x0Fu8; 32], 0), at(0.0), false),
            (5, flipped(&[0x0Fu8; 32], 30), at(cos(0.92)), true),
            (6, flipped(&[0x33u8; 32], 0), at(0.0), true),
            (7, flipped(&[0x33u8; 32], 70), at(cos(0.99)), true),
            (8, flipped(&[0x55u8; 32], 0), at(0.0), true),
            (9, flipped(&[0x55u8; 32], 40), at(cos(0.62)), true),
            (10, flipped(&[0xAAu8; 32], 0), at(0.0), false),
            (11, flipped(&[0xAAu8; 32], 30), at(cos(0.72)), true),
        ];
        let index = index_of(&entries);
        assert_eq!(index.duplicate_groups(&DuplicateRule::default()).unwrap(), vec![vec![0, 1], vec![4, 5]]);
        // Without verification every candidate pair is joined; at 24 bits none of these are candidates.
        let codes_only = DuplicateRule::new(Some(64), false);
        assert_eq!(index.duplicate_groups(&codes_only).unwrap(), vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![8, 9], vec![10, 11]]);
        assert!(index.duplicate_groups(&DuplicateRule::new(None, false)).unwrap().is_empty());
        // A stricter whole-image threshold splits rows 0 and 1.
        let strict = DuplicateRule { max_distance: 64, verify: Some(Verification { whole: 0.9, ..Verification::default() }) };
        assert_eq!(index.duplicate_groups(&strict).unwrap(), vec![vec![4, 5]]);
    }

    #[test]
    fn insets_join_rows_through_other_rows_whole_images_only_when_verified() {
        let cos = |c: f32| c.acos();
        let whole = |byte: u8| flipped(&[byte; 32], 0);
        // Rows 0–5 carry an object code and a whole-image code each; the insets below belong to rows 1,
        // 3 and 5 and are 20 bits from another row's code.
        let entries = vec![
            (0, whole(0x00), at(0.0), true),
            (1, whole(0xF0), at(1.5), true),
            (2, whole(0x0F), at(0.0), false),
            (3, whole(0x3C), at(1.5), true),
            (4, whole(0x55), at(0.0), true),
            (5, whole(0xC3), at(1.5), true),
            (6, whole(0x99), at(0.0), true),
        ];
        let mut index = index_of(&entries);
        index.insets = Insets { codes: Codes::new(256), owner: Vec::new(), features: Vec::new() };
        let insets = [
            // Row 1's inset: 0.85 to row 0's whole image (≥ 0.78: joined).
            (1, flipped(&whole(0x00), 20), at(cos(0.85))),
            // Row 3's inset: 0.99 to row 2's *object* code: insets are not compared with objects.
            (3, flipped(&whole(0x0F), 20), at(cos(0.99))),
            // Row 5's inset: 0.75 to row 4's whole image (< 0.78: not joined).
            (5, flipped(&whole(0x55), 20), at(cos(0.75))),
            // Row 6's inset: the same code and feature as row 5's: insets are not compared with insets.
            (6, flipped(&whole(0x55), 20), at(cos(0.75))),
        ];
        for (row, code, feature) in insets {
            index.insets.codes.push(&code);
            index.insets.owner.push(row);
            index.insets.features.extend(feature);
        }
        assert_eq!(index.duplicate_groups(&DuplicateRule::default()).unwrap(), vec![vec![0, 1]]);
        let looser = DuplicateRule { max_distance: 47, verify: Some(Verification { inset: 0.7, ..Verification::default() }) };
        assert_eq!(index.duplicate_groups(&looser).unwrap(), vec![vec![4, 5, 6], vec![0, 1]]);
        // By the codes alone insets join nothing: only the feature check makes them safe.
        assert!(index.duplicate_groups(&DuplicateRule::new(Some(64), false)).unwrap().is_empty());
    }

    #[test]
    fn a_tables_insets_are_read_with_their_rows_in_path_order() {
        use crate::pipeline::Inset;
        let mut pasted = crate::features::tests::record();
        pasted.insets.push(Inset { rect: crate::crop::PixelRect { left: 0, top: 0, right: 2, bottom: 2 }, feature: vec![0.6, 0.8], code: Some(vec![0x0F]) });
        let results = [Ok(pasted), Ok(crate::features::tests::record())];
        let rows: Vec<crate::features::Row> = vec![("b.jpg", &results[0]), ("a.jpg", &results[1])];
        let index = Index::from_batches([crate::features::record_batch(&rows, 1).unwrap()]).unwrap();
        assert_eq!(index.rows.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["a.jpg", "b.jpg"]);
        assert_eq!((index.insets.owner.as_slice(), index.insets.features.as_slice()), (&[1u32][..], &[0.6f32, 0.8][..]));
        assert_eq!(index.insets.codes.get(0), to_words(&[0x0F], 1).as_slice());
    }

    #[test]
    fn a_table_says_how_many_rows_each_arithmetic_made() {
        // A Spark job whose executors ran on different CPUs: two rows in bf16, one in f32, one error.
        let made_in = |arithmetic: &str| Ok(crate::pipeline::Record { arithmetic: arithmetic.into(), ..crate::features::tests::record() });
        let results = [made_in("bf16 (avx512-bf16)"), made_in("f32 (avx2)"), made_in("bf16 (avx512-bf16)"), Err(crate::error::ImageError::Empty)];
        let rows: Vec<crate::features::Row> = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"].into_iter().zip(&results).collect();
        let index = Index::from_batches([crate::features::record_batch(&rows, 1).unwrap()]).unwrap();
        assert_eq!(index.arithmetics(), [("bf16 (avx512-bf16)", 2), ("f32 (avx2)", 1)]);
        assert_eq!(index.rows[1].arithmetic.as_deref(), Some("f32 (avx2)"));
    }

    #[test]
    fn identical_codes_are_one_code_and_always_joined() {
        // 10,000 rows of one photo and one other photo: one group of 10,000, and fast (one distinct
        // code, so no candidate pairs at all).
        let mut entries: Vec<(usize, Vec<u8>, Vec<f32>, bool)> = (0..10_000).map(|row| (row, vec![7u8; 32], at(0.0), true)).collect();
        entries.push((10_000, vec![0xF0u8; 32], at(1.0), true));
        let index = index_of(&entries);
        let started = std::time::Instant::now();
        let groups = index.duplicate_groups(&DuplicateRule::default()).unwrap();
        assert_eq!(groups, vec![(0..10_000).collect::<Vec<usize>>()]);
        assert!(started.elapsed().as_secs() < 5, "10,000 identical rows took {:?}", started.elapsed());
        // One row, or none with features: nothing to group; verification without features is refused.
        assert!(index_of(&entries[..1]).duplicate_groups(&DuplicateRule::default()).unwrap().is_empty());
        let mut featureless = index_of(&entries[..2]);
        featureless.dim = 0;
        featureless.features.clear();
        let error = featureless.duplicate_groups(&DuplicateRule::default()).unwrap_err().to_string();
        assert!(error.contains("no features"), "{error}");
        assert_eq!(featureless.duplicate_groups(&DuplicateRule::new(None, false)).unwrap(), vec![vec![0, 1]]);
    }

    #[test]
    fn the_multi_index_path_groups_as_the_scan_does() {
        // Past MULTI_INDEX_FROM distinct codes candidates come from the multi-index: the same groups.
        let codes = random_codes(3000, 21);
        let mut entries = Vec::new();
        for i in 0..3000 {
            entries.push((2 * i, codes.get(i).iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>(), at(i as f32 * 1e-4), true));
            let near = flipped(&entries.last().unwrap().1, i % 40);
            entries.push((2 * i + 1, near, at(i as f32 * 1e-4 + 0.3), true));
        }
        let index = index_of(&entries);
        let rule = DuplicateRule::new(Some(24), true);
        let groups = index.duplicate_groups(&rule).unwrap();
        // cos(0.3) = 0.955 ≥ 0.68: every pair within 24 bits is joined, none beyond.
        let expected: Vec<Vec<usize>> = (0..3000).filter(|i| i % 40 <= 24).map(|i| vec![2 * i, 2 * i + 1]).collect();
        assert_eq!(groups, expected);
    }

    #[test]
    fn turned_codes_count_only_when_they_match_much_better() {
        let base = vec![0u8; 32];
        let other = vec![0xFFu8; 32];
        let entries = vec![(0, base.clone(), at(0.0), true), (1, other.clone(), at(1.0), true)];
        let index = index_of(&entries);
        // Upright the query is 100 bits from row 0 and 156 from row 1; turned, 10 bits from row 1.
        let query = |turned_bits: usize| Query {
            codes: vec![flipped(&base, 100)],
            features: vec![at(0.5)],
            turned_codes: vec![flipped(&other, turned_bits)],
            turned_features: vec![at(1.0)],
        };
        let rows = |hits: Vec<Hit>| hits.iter().map(|h| (h.row, h.distance)).collect::<Vec<_>>();
        assert_eq!(rows(index.search(&query(10), 2, 0)), vec![(1, 10), (0, 100)]);
        // 96 bits turned is not TURNED_MARGIN nearer than 100 upright: the upright ranking stands.
        assert_eq!(rows(index.search(&query(96), 2, 0)), vec![(0, 100), (1, 156)]);
        // Re-ranking uses the turned features when the turned codes count.
        let hits = index.search(&query(10), 2, 2);
        assert_eq!(hits[0].row, 1);
        assert!((hits[0].cosine.unwrap() - 1.0).abs() < 1e-6);
    }
}
