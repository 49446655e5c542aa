//! DeepBit-style binary codes: `bits = sign(Rᵀ Pᵀ (x − μ))`, with P k directions fitted on a sample of
//! features — the top-k PCA directions, or the directions edits of a photo move least relative to how
//! photos differ (see [`fit`]) — and R the ITQ rotation (Gong & Lazebnik, "Iterative Quantization",
//! CVPR 2011) that makes the signs lose as little as possible. A 256-bit code is 160× smaller than the
//! 1280 floats it stands for and compares with a handful of popcounts.
//!
//! The projection lives in a safetensors file (readable from Python with `safetensors.numpy.load_file`):
//! tensors `mean` f32 `[d]`, `pca` f32 `[d, k]` (columns = the k directions, PCA's or the edit-invariant
//! ones, strongest first) and `rotation` f32 `[k, k]`; metadata `format = "imgfeat-itq-v1"` plus the
//! fit's figures.

pub mod edits;
mod linalg;

use std::collections::HashMap;
use std::path::Path;

use nalgebra::DMatrix;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Error;
use edits::SplitMix64;

const FORMAT: &str = "imgfeat-itq-v1";

/// A fitted projection, ready to encode features.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    mean: Vec<f32>,
    pca: DMatrix<f32>,
    rotation: DMatrix<f32>,
    /// The columns of P·R, one after another: direction j's sign is bit j.
    directions: Vec<f32>,
    /// Names the codes this projection makes (see [`Projection::fingerprint`]).
    fingerprint: String,
    metadata: HashMap<String, String>,
}

impl Projection {
    fn new(mean: Vec<f32>, pca: DMatrix<f32>, rotation: DMatrix<f32>, metadata: HashMap<String, String>) -> Projection {
        // P·R is d × k and column-major, so each bit's direction (a column) is already contiguous.
        let directions = (&pca * &rotation).as_slice().to_vec();
        let mut hash = Sha256::new();
        for value in mean.iter().chain(&directions) {
            hash.update(value.to_le_bytes());
        }
        let fingerprint = hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Projection { mean, pca, rotation, directions, fingerprint, metadata }
    }

    /// The first 8 bytes of the SHA-256 of the mean and the directions, in hex: two projections with
    /// the same fingerprint make the same codes. Tables record it, so that codes made by different
    /// projections (which cannot be compared) are refused rather than ranked.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn bits(&self) -> usize {
        self.rotation.ncols()
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The projections `Rᵀ Pᵀ (x − μ)` whose signs are the bits.
    pub fn project(&self, feature: &[f32]) -> Vec<f32> {
        assert_eq!(feature.len(), self.dim(), "feature length does not match the projection");
        let centred: Vec<f32> = feature.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        self.directions.chunks_exact(self.dim()).map(|direction| dot(direction, &centred)).collect()
    }

    /// The packed code: bit j is 1 when projection j is positive, most significant bit first.
    pub fn encode(&self, feature: &[f32]) -> Vec<u8> {
        pack_signs(&self.project(feature))
    }

    /// Reads a projection file written by [`Projection::save`].
    pub fn load(path: &Path) -> Result<Projection, Error> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Projection { path: path.to_path_buf(), message: format!("{e} (fit one with `imgfeat fit-codes`)") }
        })?;
        Self::from_bytes(&bytes).map_err(|message| Error::Projection { path: path.to_path_buf(), message })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Projection, String> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!("metadata format is {:?}, expected {FORMAT:?}", metadata.get("format")));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let read = |name: &str, rank: usize| -> Result<(Vec<usize>, Vec<f32>), String> {
            let view = tensors.tensor(name).map_err(|e| format!("tensor {name}: {e}"))?;
            if view.dtype() != Dtype::F32 || view.shape().len() != rank {
                return Err(format!("tensor {name} is {:?} {:?}, expected f32 of rank {rank}", view.dtype(), view.shape()));
            }
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Ok((view.shape().to_vec(), values))
        };
        let (_, mean) = read("mean", 1)?;
        let (pca_shape, pca) = read("pca", 2)?;
        let (rotation_shape, rotation) = read("rotation", 2)?;
        let (d, k) = (mean.len(), rotation_shape[0]);
        if pca_shape != [d, k] || rotation_shape != [k, k] || k % 8 != 0 {
            return Err(format!("inconsistent shapes: mean [{d}], pca {pca_shape:?}, rotation {rotation_shape:?}"));
        }
        Ok(Projection::new(
            mean,
            DMatrix::from_row_slice(d, k, &pca),
            DMatrix::from_row_slice(k, k, &rotation),
            metadata,
        ))
    }

    /// Writes the projection with its fit report as safetensors metadata.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let row_major = |m: &DMatrix<f32>| -> Vec<u8> { m.transpose().as_slice().iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mean: Vec<u8> = self.mean.iter().flat_map(|x| x.to_le_bytes()).collect();
        let (pca, rotation) = (row_major(&self.pca), row_major(&self.rotation));
        let (d, k) = (self.dim(), self.bits());
        use safetensors::tensor::TensorView;
        let view = |shape: Vec<usize>, data| TensorView::new(Dtype::F32, shape, data).expect("sizes match");
        let tensors = vec![("mean", view(vec![d], &mean[..])), ("pca", view(vec![d, k], &pca[..])), ("rotation", view(vec![k, k], &rotation[..]))];
        let bytes = safetensors::serialize(tensors, Some(self.metadata.clone())).map_err(|e| Error::Output(e.to_string()))?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }
}

/// Σ a·b in 16 interleaved partial sums, which the compiler keeps in vector registers: a single
/// running sum is a chain of dependent additions it may not reorder (0.3 ms a photo for two 256-bit
/// codes from 1280-dimensional features, where this takes a tenth of it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut partial = [0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_blocks.remainder().iter().zip(b_blocks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_blocks.zip(b_blocks) {
        for ((p, x), y) in partial.iter_mut().zip(x).zip(y) {
            *p += x * y;
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// Signs → bits, most significant bit first: bit j is the (7 − j % 8)-th bit of byte j / 8.
pub fn pack_signs(values: &[f32]) -> Vec<u8> {
    let mut code = vec![0u8; values.len().div_ceil(8)];
    for (j, &v) in values.iter().enumerate() {
        if v > 0.0 {
            code[j / 8] |= 0x80 >> (j % 8);
        }
    }
    code
}

/// What a fit achieved, recorded in the projection file and printed by `imgfeat fit-codes`.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// "pca" (the directions of largest variance) or "edit-invariant" (the directions along which
    /// photos differ most relative to how edits of one photo differ).
    pub method: &'static str,
    pub bits: usize,
    pub samples: usize,
    /// (original, edited copy) feature pairs the fit learnt invariance from; 0 for PCA.
    pub edit_pairs: usize,
    pub dim: usize,
    pub iterations: usize,
    /// Share of the features' variance the k directions keep, for PCA (whose directions are orthonormal).
    pub explained_variance: Option<f64>,
    /// The edits' variance along the k directions over the photos' variance along them: how much of what
    /// a code sees is edit rather than photo (lower is more invariant). Measured where edits were given.
    pub edit_to_photo_variance: Option<f64>,
    /// ‖B − V R‖²_F / (n k) after the last ITQ iteration, with V the projected samples scaled to unit RMS
    /// and B their signs: the mean squared error per bit (about 0.40 for Gaussian data left unrotated).
    pub quantisation_loss: f64,
    /// The same loss with the initial random rotation, to show what ITQ bought.
    pub quantisation_loss_before_itq: f64,
    /// Fraction of samples with each bit set: ideal codes have every bit near 0.5.
    pub bit_balance_min: f64,
    pub bit_balance_mean: f64,
    pub bit_balance_max: f64,
    pub backend: &'static str,
}

/// How strongly the edit-invariant fit trusts the edits' covariance: Sw + ε·(tr Sw / d)·I with this ε.
/// Some hundred photos' edits cannot estimate a 1280 × 1280 covariance; without the ridge the fit would
/// chase directions the edits happened not to move. Issue 19's numpy prototype measured 0.1–0.3 alike on
/// photos 1–300; not swept again since.
const EDIT_RIDGE: f64 = 0.2;

/// The edited copies' (copy − original) feature differences, summed into Σ δδᵀ batch by batch as the
/// copies are processed: a fit over many photos holds one d × d matrix (13 MB at d = 1280) rather than
/// every difference (10,000 photos × 8 edits × 2 crops of 1,280 floats would be 0.8 GB, twice that as
/// the f64 matrix the product needs).
#[derive(Debug, Clone, Default)]
pub struct EditScatter {
    sum: Option<DMatrix<f64>>,
    pairs: usize,
}

impl EditScatter {
    /// Adds a batch of differences, each as long as the features.
    pub fn add(&mut self, differences: &[Vec<f32>]) -> Result<(), Error> {
        let Some(d) = differences.first().map(Vec::len) else { return Ok(()) };
        if differences.iter().any(|x| x.len() != d) || self.sum.as_ref().is_some_and(|sum| sum.nrows() != d) {
            return Err(Error::Fit("edit differences have different lengths".into()));
        }
        let batch = linalg::gram(&DMatrix::<f64>::from_fn(differences.len(), d, |i, j| differences[i][j] as f64));
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum + batch,
            None => batch,
        });
        self.pairs += differences.len();
        Ok(())
    }

    /// How many differences were added.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Sw, the edits' covariance (around zero: a difference's expected value is no edit at all).
    fn covariance(&self) -> Option<DMatrix<f64>> {
        self.sum.as_ref().map(|sum| sum / self.pairs as f64)
    }
}

/// Fits μ, P and R (ITQ, `iterations` rounds from a seeded random rotation) on `samples`, the features
/// of the user's photos.
///
/// Without edits (an empty [`EditScatter`]), P is the top-`bits` PCA directions. With them (each an
/// edited copy's feature minus its original's), P solves the generalised eigenproblem St p = λ Sw p — St the photos'
/// covariance, Sw the edits' (ridged) — and keeps the `bits` directions of largest λ: those along which
/// different photos are far apart and edited copies of one photo stay close, the linear form of what
/// DeepBit trains its network for.
pub fn fit(
    samples: &[Vec<f32>],
    edits: &EditScatter,
    bits: usize,
    iterations: usize,
    seed: u64,
) -> Result<(Projection, FitReport), Error> {
    let n = samples.len();
    let d = samples.first().map_or(0, Vec::len);
    if bits == 0 || !bits.is_multiple_of(8) {
        return Err(Error::Fit(format!("bits must be a positive multiple of 8, got {bits}")));
    }
    if d < bits || n <= bits {
        return Err(Error::Fit(format!(
            "{bits} bits need features of at least {bits} dimensions and more than {bits} samples; got {n} samples of {d}"
        )));
    }
    if samples.iter().any(|s| s.len() != d) || edits.sum.as_ref().is_some_and(|sum| sum.nrows() != d) {
        return Err(Error::Fit("samples and edit differences have different lengths".into()));
    }
    let mean: Vec<f64> = (0..d).map(|j| samples.iter().map(|s| s[j] as f64).sum::<f64>() / n as f64).collect();
    let centred = DMatrix::<f64>::from_fn(n, d, |i, j| samples[i][j] as f64 - mean[j]);
    let covariance = linalg::gram(&centred) / (n as f64 - 1.0);
    let edit_covariance = edits.covariance();

    let (method, directions, explained_variance) = match &edit_covariance {
        None => {
            let (eigenvalues, eigenvectors) = linalg::symmetric_eigen(&covariance);
            let order = descending(&eigenvalues);
            let total: f64 = eigenvalues.iter().map(|v| v.max(0.0)).sum();
            let kept: f64 = order[..bits].iter().map(|&i| eigenvalues[i].max(0.0)).sum();
            let pca = DMatrix::<f64>::from_fn(d, bits, |i, j| eigenvectors[(i, order[j])]);
            ("pca", pca, Some(kept / total.max(f64::MIN_POSITIVE)))
        }
        Some(edits) => {
            if edits.trace() <= f64::EPSILON * d as f64 {
                return Err(Error::Fit("the edited copies' features equal their originals': there is nothing to be invariant to".into()));
            }
            // Whiten the edits (W = V Λ^-½ of the ridged Sw), then PCA of the photos in that space.
            let ridge = EDIT_RIDGE * edits.trace() / d as f64;
            let ridged = edits + DMatrix::<f64>::identity(d, d) * ridge.max(f64::MIN_POSITIVE);
            let (values, vectors) = linalg::symmetric_eigen(&ridged);
            let whiten = DMatrix::<f64>::from_fn(d, d, |i, j| vectors[(i, j)] / values[j].max(ridge).sqrt());
            let whitened = linalg::matmul(&linalg::matmul(&whiten.transpose(), &covariance), &whiten);
            let whitened = (&whitened + whitened.transpose()) * 0.5;
            let (eigenvalues, eigenvectors) = linalg::symmetric_eigen(&whitened);
            let order = descending(&eigenvalues);
            let top = DMatrix::<f64>::from_fn(d, bits, |i, j| eigenvectors[(i, order[j])]);
            let mut directions = linalg::matmul(&whiten, &top);
            // Unit columns, a choice not measured against keeping W·q: ITQ rotates the columns together,
            // so their scales weight them (W·q would weight the most edit-invariant directions more).
            for mut column in directions.column_iter_mut() {
                let norm = column.norm().max(f64::MIN_POSITIVE);
                column /= norm;
            }
            ("edit-invariant", directions, None)
        }
    };
    let variance_along = |matrix: &DMatrix<f64>| linalg::matmul(&linalg::matmul(&directions.transpose(), matrix), &directions).trace();
    let edit_to_photo_variance = edit_covariance.as_ref().map(|edits| variance_along(edits) / variance_along(&covariance).max(f64::MIN_POSITIVE));

    // V: n × k, scaled to unit RMS so the loss below reads the same whatever the features' scale
    // (the rotation ITQ finds does not depend on it).
    let projected = linalg::matmul(&centred, &directions);
    let projected = &projected * ((n * bits) as f64 / projected.norm_squared().max(f64::MIN_POSITIVE)).sqrt();

    // ITQ: alternate B = sign(V R) and the orthogonal Procrustes solution R = U Wᵀ of Vᵀ B = U Σ Wᵀ.
    let mut rotation = random_rotation(bits, seed);
    let loss = |rotation: &DMatrix<f64>| -> f64 {
        let rotated = linalg::matmul(&projected, rotation);
        rotated.iter().map(|&v| (signum(v) - v).powi(2)).sum::<f64>() / (n * bits) as f64
    };
    let quantisation_loss_before_itq = loss(&rotation);
    for _ in 0..iterations {
        let signs = linalg::matmul(&projected, &rotation).map(signum);
        let (u, v_t) = linalg::svd(&linalg::matmul(&projected.transpose(), &signs));
        rotation = u * v_t;
    }
    let quantisation_loss = loss(&rotation);
    let rotated = linalg::matmul(&projected, &rotation);
    let balance: Vec<f64> = (0..bits).map(|j| rotated.column(j).iter().filter(|&&v| v > 0.0).count() as f64 / n as f64).collect();

    let report = FitReport {
        method,
        bits,
        samples: n,
        edit_pairs: edits.pairs(),
        dim: d,
        iterations,
        explained_variance,
        edit_to_photo_variance,
        quantisation_loss,
        quantisation_loss_before_itq,
        bit_balance_min: balance.iter().copied().fold(f64::INFINITY, f64::min),
        bit_balance_mean: balance.iter().sum::<f64>() / bits as f64,
        bit_balance_max: balance.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        backend: linalg::BACKEND,
    };
    let mut metadata: HashMap<String, String> = serde_json::to_value(&report)
        .expect("report serialises")
        .as_object()
        .expect("report is an object")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.to_string().trim_matches('"').to_string()))
        .collect();
    metadata.insert("format".into(), FORMAT.into());
    let projection = Projection::new(
        mean.iter().map(|&m| m as f32).collect(),
        directions.map(|x| x as f32),
        rotation.map(|x| x as f32),
        metadata,
    );
    Ok((projection, report))
}

/// Indices of `values`, largest first.
fn descending(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order
}

fn signum(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else {
        -1.0
    }
}

/// A seeded random orthogonal matrix: the U factor of a Gaussian matrix's SVD.
fn random_rotation(k: usize, seed: u64) -> DMatrix<f64> {
    let mut random = SplitMix64::new(seed);
    let gaussian = DMatrix::<f64>::from_fn(k, k, |_, _| {
        let (u1, u2) = (random.uniform(0.0, 1.0).max(f64::MIN_POSITIVE), random.uniform(0.0, 1.0));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    });
    linalg::svd(&gaussian).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_most_significant_bit_first() {
        let mut values = vec![-1.0f32; 16];
        values[0] = 1.0;
        values[9] = 0.5;
        values[15] = 2.0;
        values[3] = 0.0; // zero is not positive
        assert_eq!(pack_signs(&values), vec![0b1000_0000, 0b0100_0001]);
    }

    /// Samples with a known low-dimensional structure: 16 latent factors spread over 48 dimensions plus
    /// a little noise, so PCA must find them and the signs must be balanced.
    fn synthetic_samples(n: usize) -> Vec<Vec<f32>> {
        let mut state = 12345u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20001) as f32 / 10000.0 - 1.0
        };
        let mixing: Vec<Vec<f32>> = (0..16).map(|_| (0..48).map(|_| next()).collect()).collect();
        (0..n)
            .map(|_| {
                let latent: Vec<f32> = (0..16).map(|_| next()).collect();
                (0..48).map(|j| 0.3 + (0..16).map(|f| latent[f] * mixing[f][j]).sum::<f32>() + 0.01 * next()).collect()
            })
            .collect()
    }

    #[test]
    fn fit_keeps_the_variance_balances_bits_and_itq_lowers_the_loss() {
        let samples = synthetic_samples(600);
        let (projection, report) = fit(&samples, &EditScatter::default(), 16, 50, 7).unwrap();
        assert_eq!((projection.bits(), projection.dim()), (16, 48));
        assert!(report.explained_variance.unwrap() > 0.99, "{report:?}");
        assert!(report.quantisation_loss < report.quantisation_loss_before_itq, "{report:?}");
        assert!(report.bit_balance_min > 0.3 && report.bit_balance_max < 0.7, "{report:?}");
        // The rotation stays orthogonal.
        let r = projection.rotation.map(|x| x as f64);
        let identity = DMatrix::<f64>::identity(16, 16);
        assert!((r.transpose() * &r - identity).abs().max() < 1e-4);
    }

    /// Photos that differ in 16 latent factors over dimensions 0..24, plus a "style" over dimensions
    /// 24..48 that is larger still and that edits re-draw. PCA keeps the style; the edit-invariant fit
    /// must keep the photos' factors, so an edited copy's code stays near its original's.
    #[test]
    fn the_edit_invariant_fit_keeps_what_edits_leave_alone() {
        let mut random = SplitMix64::new(99);
        let mut gaussian = move || {
            let (u1, u2) = (random.uniform(0.0, 1.0).max(f64::MIN_POSITIVE), random.uniform(0.0, 1.0));
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let mixing: Vec<Vec<f32>> = (0..16).map(|_| (0..24).map(|_| gaussian()).collect()).collect();
        let style_mixing: Vec<Vec<f32>> = (0..8).map(|_| (0..24).map(|_| gaussian()).collect()).collect();
        let photo = |latent: &[f32], style: &[f32], noise: &[f32]| -> Vec<f32> {
            let signal = (0..24).map(|j| (0..16).map(|f| latent[f] * mixing[f][j]).sum::<f32>());
            let nuisance = (0..24).map(|j| 1.5 * (0..8).map(|f| style[f] * style_mixing[f][j]).sum::<f32>());
            signal.chain(nuisance).zip(noise).map(|(v, e)| v + 0.05 * e).collect()
        };
        let mut draw = |n: usize| -> Vec<(Vec<f32>, Vec<f32>)> {
            (0..n)
                .map(|_| {
                    let mut normal = |k: usize| -> Vec<f32> { (0..k).map(|_| gaussian()).collect() };
                    let (latent, style, restyle) = (normal(16), normal(8), normal(8));
                    (photo(&latent, &style, &normal(48)), photo(&latent, &restyle, &normal(48)))
                })
                .collect()
        };
        let (training, held_out) = (draw(400), draw(200));
        let originals: Vec<Vec<f32>> = training.iter().map(|(o, _)| o.clone()).collect();
        let differences: Vec<Vec<f32>> =
            training.iter().map(|(o, e)| e.iter().zip(o).map(|(a, b)| a - b).collect()).collect();
        let (pca, pca_report) = fit(&originals, &EditScatter::default(), 16, 30, 1).unwrap();
        let mut scatter = EditScatter::default();
        for batch in differences.chunks(64) {
            scatter.add(batch).unwrap();
        }
        let (invariant, report) = fit(&originals, &scatter, 16, 30, 1).unwrap();
        assert_eq!((pca_report.method, report.method, report.edit_pairs), ("pca", "edit-invariant", 400));
        assert!(report.edit_to_photo_variance.unwrap() < 0.25, "{report:?}");
        // Recall@1 of each held-out edited copy among the held-out originals, by Hamming distance.
        let recall = |projection: &Projection| -> f64 {
            let codes: Vec<Vec<u8>> = held_out.iter().map(|(o, _)| projection.encode(o)).collect();
            let hamming = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum::<u32>();
            let found = held_out
                .iter()
                .enumerate()
                .filter(|(i, (_, edited))| {
                    let query = projection.encode(edited);
                    let own = hamming(&query, &codes[*i]);
                    codes.iter().enumerate().all(|(j, c)| j == *i || hamming(&query, c) > own)
                })
                .count();
            found as f64 / held_out.len() as f64
        };
        let (pca_recall, invariant_recall) = (recall(&pca), recall(&invariant));
        assert!(invariant_recall > 0.5 && invariant_recall > pca_recall + 0.3, "PCA {pca_recall}, edit-invariant {invariant_recall}");
    }

    #[test]
    fn encode_matches_the_definition() {
        let samples = synthetic_samples(300);
        let (projection, _) = fit(&samples, &EditScatter::default(), 8, 10, 1).unwrap();
        let x = &samples[5];
        let centred = DMatrix::from_fn(48, 1, |i, _| x[i] - projection.mean[i]);
        let expected = projection.rotation.transpose() * projection.pca.transpose() * centred;
        let bits: Vec<f32> = expected.iter().copied().collect();
        assert_eq!(projection.encode(x), pack_signs(&bits));
        let projected = projection.project(x);
        for (a, b) in projected.iter().zip(&bits) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let (projection, report) = fit(&synthetic_samples(200), &EditScatter::default(), 8, 5, 3).unwrap();
        let path = std::env::temp_dir().join(format!("imgfeat-projection-{}.safetensors", std::process::id()));
        projection.save(&path).unwrap();
        let loaded = Projection::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded, projection);
        assert_eq!(loaded.metadata["samples"], report.samples.to_string());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let err = Projection::load(Path::new("/nonexistent/codes.safetensors")).unwrap_err().to_string();
        assert!(err.contains("fit-codes"), "{err}");
        assert!(Projection::from_bytes(b"garbage").unwrap_err().contains("safetensors"));
    }

    #[test]
    fn edits_that_change_nothing_are_refused() {
        let mut zeros = EditScatter::default();
        zeros.add(&vec![vec![0.0f32; 48]; 10]).unwrap();
        let err = fit(&synthetic_samples(100), &zeros, 16, 5, 1).unwrap_err().to_string();
        assert!(err.contains("nothing to be invariant to"), "{err}");
    }

    #[test]
    fn edit_scatter_summed_in_batches_equals_it_summed_at_once() {
        let differences = synthetic_samples(150);
        let (mut batched, mut whole) = (EditScatter::default(), EditScatter::default());
        for batch in differences.chunks(32) {
            batched.add(batch).unwrap();
        }
        whole.add(&differences).unwrap();
        assert_eq!((batched.pairs(), whole.pairs()), (150, 150));
        let (a, b) = (batched.covariance().unwrap(), whole.covariance().unwrap());
        assert!((a - &b).abs().max() <= 1e-12 * b.abs().max(), "batched and whole sums differ");
        assert!(batched.add(&[vec![0.0; 47]]).is_err(), "a difference of another length is refused");
    }

    #[test]
    fn fit_rejects_too_few_samples() {
        assert!(fit(&synthetic_samples(10), &EditScatter::default(), 16, 5, 1).is_err());
    }
}
