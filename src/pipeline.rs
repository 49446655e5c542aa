//! The whole data path for a batch of encoded images: decode → detect → crop → embed → code, one row
//! per input in input order. Models load once in [`Pipeline::new`]; each call spreads its images over
//! exactly `Config.threads` threads (the caller's own thread when that is 1), so a Spark task never
//! uses more cores than it was given, however many tasks share the pipeline.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;
use serde::Serialize;

use crate::codes::Projection;
use crate::config::Config;
use crate::crop::{crop, crop_rect, inset_rects, InsetSearch, PixelRect};
use crate::decode::{decode_scaled, declared_pixels, Decoded};
use crate::detect::{Detection, Detector};
use crate::embed::Embedder;
use crate::model::Arithmetic;
use crate::error::{panic_message, Error, ImageError};

/// Everything imgfeat knows about one image: one output row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Size of the decoded, upright image.
    pub width: u32,
    pub height: u32,
    /// The main object (its class, score and box, normalised to 0..1), when one scored above the
    /// threshold; without one the crop is the whole image.
    pub main_object: Option<Detection>,
    /// The pixels that were embedded as the object: the box plus margin, or the whole image.
    pub crop: PixelRect,
    /// L2-normalised embedding of the crop (`embed` = object or both).
    pub feature: Option<Vec<f32>>,
    /// Packed binary code of `feature`.
    pub code: Option<Vec<u8>>,
    /// L2-normalised embedding of the whole image (`embed` = whole or both).
    pub whole_feature: Option<Vec<f32>>,
    pub whole_code: Option<Vec<u8>>,
    /// Every detection above the threshold after NMS, best first.
    pub detections: Vec<Detection>,
    /// Photos found pasted into this one, each embedded on its own (at most `Config.insets`, found by
    /// [`InsetSearch::Row`]); empty for most photos.
    pub insets: Vec<Inset>,
    /// The arithmetic the row was made in ([`Pipeline::arithmetic`], as `bf16 (avx512-bf16)`): rows
    /// that executors on different CPUs made in different precisions differ by more than rounding,
    /// and a table says so row by row.
    pub arithmetic: String,
}

/// A search query's view of an image: see [`Pipeline::query`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRecord {
    /// The image's row, without row insets: `insets` holds the query's own, found more eagerly.
    pub record: Record,
    pub insets: Vec<Inset>,
    /// The whole image turned a quarter right and a quarter left, embedded: a photo rotated by 90°
    /// matches its original through one of them ([`crate::search::Index::search`] uses them only when
    /// they match much better than the image as it is).
    pub turned: Vec<Turned>,
}

/// The whole image turned by a quarter, embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct Turned {
    pub feature: Vec<f32>,
    pub code: Option<Vec<u8>>,
}

/// A photo found pasted into the image, embedded on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inset {
    /// Where it is, in the photo's pixels.
    pub rect: PixelRect,
    pub feature: Vec<f32>,
    pub code: Option<Vec<u8>>,
}

/// Loaded models and how many threads a call computes on. Cheap to share: `process` takes `&self` and
/// may be called from several threads at once.
#[derive(Debug)]
pub struct Pipeline {
    config: Config,
    detector: Detector,
    embedder: Embedder,
    projection: Option<Projection>,
    /// Compute threads per `process` call. One runs on the caller's thread, so a Spark task with one
    /// core starts no other; more get a pool of their own for the call, so concurrent tasks sharing
    /// this pipeline each get exactly their cores.
    threads: usize,
    /// Decoded pixels in flight, bounded by `limits.max_inflight_pixels`.
    budget: PixelBudget,
    /// What the loaded models run in ([`Pipeline::arithmetic`]), and the same as each row names it
    /// (`bf16 (avx512-bf16)`): fixed once the models load.
    arithmetic: Arithmetic,
    made_in: String,
}

impl Pipeline {
    /// Loads the detector, the embedder and the binary-code projection named by `config`.
    pub fn new(config: Config) -> Result<Pipeline, Error> {
        let projection = Projection::load(&config.projection_path())?;
        Self::build(config, Some(projection))
    }

    /// The [fingerprint](Projection::fingerprint) of the projection that makes this pipeline's codes.
    pub fn projection_fingerprint(&self) -> Option<&str> {
        self.projection.as_ref().map(Projection::fingerprint)
    }

    /// A pipeline that computes features but no codes: what `fit-codes` needs before a projection exists.
    pub fn without_codes(config: Config) -> Result<Pipeline, Error> {
        Self::build(config, None)
    }

    fn build(config: Config, projection: Option<Projection>) -> Result<Pipeline, Error> {
        config.validate()?;
        let detector = Detector::load(&config)?;
        let embedder = Embedder::load(&config)?;
        if let Some(projection) = &projection {
            if projection.bits() != config.codes.bits {
                return Err(Error::Projection {
                    path: config.projection_path(),
                    message: format!("holds {}-bit codes, but codes.bits is {}", projection.bits(), config.codes.bits),
                });
            }
            if let Some(dim) = embedder.feature_len().filter(|&dim| dim != projection.dim()) {
                return Err(Error::Projection {
                    path: config.projection_path(),
                    message: format!("fitted on {}-d features, but the embedder gives {dim}", projection.dim()),
                });
            }
        }
        let threads = config.effective_threads();
        let budget = PixelBudget::new(config.limits.max_inflight_pixels);
        let arithmetic = Arithmetic::together(detector.arithmetic(), embedder.arithmetic());
        let made_in = arithmetic.to_string();
        Ok(Pipeline { config, detector, embedder, projection, threads, budget, arithmetic, made_in })
    }

    /// The arithmetic the models run in, as loaded on this CPU: what a table records of its rows.
    pub fn arithmetic(&self) -> Arithmetic {
        self.arithmetic.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The number of compute threads one `process` call uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// One result per input, in input order. A bad image is an `Err` in its slot, never a missing slot
    /// or a failed batch; even a panic inside a model is caught and reported for that image alone.
    pub fn process(&self, images: &[&[u8]]) -> Vec<Result<Record, ImageError>> {
        if self.threads == 1 || images.len() < 2 {
            return images.iter().map(|bytes| self.process_one(bytes)).collect();
        }
        // Starting threads costs ~0.1 ms against ~28 ms an image: a pool per call is nearly free.
        match rayon::ThreadPoolBuilder::new().num_threads(self.threads.min(images.len())).build() {
            Ok(pool) => pool.install(|| images.par_iter().map(|bytes| self.process_one(bytes)).collect()),
            Err(_) => images.iter().map(|bytes| self.process_one(bytes)).collect(),
        }
    }

    /// The same for one image, on the calling thread.
    pub fn process_one(&self, bytes: &[u8]) -> Result<Record, ImageError> {
        catch_unwind(AssertUnwindSafe(|| self.extract(bytes)))
            .unwrap_or_else(|panic| Err(ImageError::Internal(panic_message(&*panic))))
    }

    /// Reads and processes files, one row per file in order: a file that cannot be read is an error
    /// row, like an image that cannot be decoded.
    pub fn process_files(&self, files: &[std::path::PathBuf]) -> Vec<Result<Record, ImageError>> {
        let contents: Vec<std::io::Result<Vec<u8>>> = files.iter().map(std::fs::read).collect();
        let inputs: Vec<Result<&[u8], ImageError>> =
            contents.iter().map(|c| c.as_deref().map_err(|e| ImageError::Unreadable(e.to_string()))).collect();
        self.process_inputs(inputs)
    }

    /// Processes the inputs that are images and passes the others' errors through (a file that could
    /// not be read, a missing item): one row per input, in order.
    pub fn process_inputs(&self, inputs: Vec<Result<&[u8], ImageError>>) -> Vec<Result<Record, ImageError>> {
        let images: Vec<&[u8]> = inputs.iter().filter_map(|input| input.as_ref().ok().copied()).collect();
        let mut processed = self.process(&images).into_iter();
        inputs.into_iter().map(|input| input.and_then(|_| processed.next().expect("one result per image"))).collect()
    }

    /// A search query's view of one image: its row, the photos pasted into it
    /// ([`crate::crop::inset_rects`] as [`InsetSearch::Query`], at most `max_insets`) embedded on their
    /// own, and the whole image turned by a quarter either way (two embeddings, about 6 ms each on one
    /// core). A photo pasted small onto another matches its original only through its own pixels: the
    /// whole image is mostly the other photo, and the detector's main object may be the other photo's.
    pub fn query(&self, bytes: &[u8], max_insets: usize) -> Result<QueryRecord, ImageError> {
        catch_unwind(AssertUnwindSafe(|| {
            let _reserved = self.reserve(bytes);
            let decoded = decode_scaled(bytes, &self.config.limits, self.config.jpeg_scale_min_side)?;
            let insets = self.insets(&decoded, max_insets, InsetSearch::Query)?;
            let turned = [image::imageops::rotate90(&decoded.image), image::imageops::rotate270(&decoded.image)]
                .iter()
                .map(|image| {
                    let feature = self.embedder.embed(image)?;
                    Ok(Turned { code: self.encode(Some(&feature)), feature })
                })
                .collect::<Result<Vec<Turned>, ImageError>>()?;
            let record = self.process_decoded(decoded, 0)?;
            Ok(QueryRecord { record, insets, turned })
        }))
        .unwrap_or_else(|panic| Err(ImageError::Internal(panic_message(&*panic))))
    }

    /// Waits for room before decoding; the header's size (capped by max_pixels, beyond which decoding
    /// refuses the image anyway) is what the decoded image and its copies will take.
    fn reserve(&self, bytes: &[u8]) -> Reservation<'_> {
        self.budget.reserve(declared_pixels(bytes).unwrap_or(0).min(self.config.limits.max_pixels))
    }

    fn extract(&self, bytes: &[u8]) -> Result<Record, ImageError> {
        let _reserved = self.reserve(bytes);
        let decoded = decode_scaled(bytes, &self.config.limits, self.config.jpeg_scale_min_side)?;
        self.process_decoded(decoded, self.config.insets)
    }

    /// The photos pasted into the image (at most `max`), embedded and encoded, placed in the photo's
    /// own pixels.
    fn insets(&self, decoded: &Decoded, max: usize, search: InsetSearch) -> Result<Vec<Inset>, ImageError> {
        inset_rects(&decoded.image, max, search)
            .into_iter()
            .map(|rect| {
                let feature = self.embedder.embed(&crop(&decoded.image, rect))?;
                let rect = rect.rescaled(decoded.image.dimensions(), (decoded.full_width, decoded.full_height));
                Ok(Inset { rect, code: self.encode(Some(&feature)), feature })
            })
            .collect()
    }

    /// Detect → crop → embed → code for a decoded image, with up to `max_insets` row insets.
    fn process_decoded(&self, decoded: Decoded, max_insets: usize) -> Result<Record, ImageError> {
        let insets = self.insets(&decoded, max_insets, InsetSearch::Row)?;
        let image = decoded.image;
        let (width, height) = image.dimensions();
        let detections = self.detector.detect(&image)?;
        let main = self.detector.main_object(&detections).cloned();
        let rect = match &main {
            Some(object) => crop_rect(&object.bbox, width, height, self.config.crop_margin),
            None => PixelRect::whole(width, height),
        };
        // Rows describe the photo as it is, whatever scale it was decoded at.
        let (full_width, full_height) = (decoded.full_width, decoded.full_height);
        let reported_rect = match &main {
            Some(object) => crop_rect(&object.bbox, full_width, full_height, self.config.crop_margin),
            None => PixelRect::whole(full_width, full_height),
        };
        let embed = self.config.embed;
        let crop_is_whole = rect == PixelRect::whole(width, height);
        let feature = match (embed.object(), crop_is_whole) {
            (false, _) => None,
            (true, true) => Some(self.embedder.embed(&image)?),
            (true, false) => Some(self.embedder.embed(&crop(&image, rect))?),
        };
        // Without a detection the crop is the whole image: reuse its embedding rather than run it twice.
        let whole_feature = match (embed.whole(), crop_is_whole, &feature) {
            (false, _, _) => None,
            (true, true, Some(feature)) => Some(feature.clone()),
            (true, _, _) => Some(self.embedder.embed(&image)?),
        };
        Ok(Record {
            width: full_width,
            height: full_height,
            main_object: main,
            crop: reported_rect,
            code: self.encode(feature.as_deref()),
            whole_code: self.encode(whole_feature.as_deref()),
            feature,
            whole_feature,
            detections,
            insets,
            arithmetic: self.made_in.clone(),
        })
    }

    fn encode(&self, feature: Option<&[f32]>) -> Option<Vec<u8>> {
        Some(self.projection.as_ref()?.encode(feature?))
    }
}

/// A counting semaphore over pixels: `reserve` blocks until the pixels fit under the limit, and the
/// returned guard gives them back when the image is done (or its processing panicked).
#[derive(Debug)]
struct PixelBudget {
    limit: u64,
    in_use: Mutex<u64>,
    freed: Condvar,
}

impl PixelBudget {
    fn new(limit: u64) -> PixelBudget {
        PixelBudget { limit, in_use: Mutex::new(0), freed: Condvar::new() }
    }

    fn reserve(&self, pixels: u64) -> Reservation<'_> {
        let pixels = pixels.min(self.limit);
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *in_use + pixels > self.limit {
            in_use = self.freed.wait(in_use).unwrap_or_else(|e| e.into_inner());
        }
        *in_use += pixels;
        Reservation { budget: self, pixels }
    }
}

struct Reservation<'a> {
    budget: &'a PixelBudget,
    pixels: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *self.budget.in_use.lock().unwrap_or_else(|e| e.into_inner()) -= self.pixels;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn reservations_wait_for_room_and_give_it_back() {
        let budget = PixelBudget::new(100);
        let first = budget.reserve(80);
        let second_started = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _second = budget.reserve(50); // 80 + 50 > 100: waits for `first`
                second_started.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(!second_started.load(Ordering::SeqCst), "the second reservation did not wait");
            drop(first);
        });
        assert!(second_started.load(Ordering::SeqCst));
        assert_eq!(*budget.in_use.lock().unwrap(), 0, "everything given back");
        // More than the whole budget is capped to it rather than waiting forever.
        drop(budget.reserve(1_000));
    }
}
