//! `imgfeat fit-codes`: the photos' features, and with `--edits N` their edited copies' differences, in
//! batches through the pipeline, then one projection fitted per code length.

use std::path::{Path, PathBuf};
use std::time::Instant;

use imgfeat::codes::{self, FitReport};
use imgfeat::config::EmbedMode;
use imgfeat::crop::PixelRect;
use imgfeat::inputs::image_files;
use imgfeat::{Config, Error, ImageError, Pipeline, Record};

use super::{progress_bar, FitOptions};

pub(crate) fn fit_codes(inputs: &[PathBuf], options: &FitOptions, output_dir: &Path, mut config: Config) -> Result<(), Error> {
    let files = image_files(inputs)?;
    config.embed = EmbedMode::Both;
    let pipeline = Pipeline::without_codes(config)?;
    let bar = progress_bar(files.len() * (1 + options.edits), "images and edited copies");
    let mut samples: Vec<Vec<f32>> = Vec::new();
    let mut edit_scatter = codes::EditScatter::default();
    let mut failed = 0;
    const BATCH: usize = 32;
    for (number, batch) in files.chunks(BATCH).enumerate() {
        let originals = pipeline.process_files(batch);
        bar.inc(batch.len() as u64);
        if options.edits > 0 {
            let edits = edited_copies(&pipeline, batch, options.edits, options.seed ^ number as u64);
            let refs: Vec<Result<&[u8], ImageError>> = edits.iter().map(|e| e.as_deref().map_err(Clone::clone)).collect();
            let copies = pipeline.process_inputs(refs);
            bar.inc(copies.len() as u64);
            let mut differences: Vec<Vec<f32>> = Vec::new();
            for (original, copies) in originals.iter().zip(copies.chunks(options.edits)) {
                let Ok(original) = original else { continue };
                for copy in copies.iter().flatten() {
                    differences.extend(edit_difference(original, copy));
                }
            }
            edit_scatter.add(&differences)?;
        }
        for result in originals {
            match result {
                // A crop that covers the whole image has the whole image's feature: count it once.
                Ok(record) if !has_own_object(&record) => samples.extend(record.whole_feature),
                Ok(record) => samples.extend(record.feature.into_iter().chain(record.whole_feature)),
                Err(_) => failed += 1,
            }
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "{} images ({failed} failed) gave {} samples (whole images, and the object crops that differ from them) and {} edit pairs",
        files.len(),
        samples.len(),
        edit_scatter.pairs()
    );
    if options.edits > 0 && edit_scatter.pairs() == 0 {
        return Err(Error::Fit("no edited copy could be processed: nothing to learn invariance from (--edits 0 fits PCA + ITQ)".into()));
    }
    let mut reports: Vec<FitReport> = Vec::new();
    for &bits in &options.bits_list {
        let started = Instant::now();
        let (projection, report) = codes::fit(&samples, &edit_scatter, bits, options.iterations, options.seed)?;
        let path = output_dir.join(format!("codes_itq_{bits}.safetensors"));
        projection.save(&path)?;
        eprintln!("{bits} bits: fitted in {:.1} s → {}", started.elapsed().as_secs_f64(), path.display());
        reports.push(report);
    }
    println!("{}", serde_json::to_string_pretty(&reports).expect("reports serialise"));
    Ok(())
}

/// `per_photo` edited copies of each file of `batch`, in file order, seeded by `seed` (the batch's) and
/// the photo's place in the batch. A file that cannot be read or decoded gives error slots, which the
/// fit skips. A pasted copy sits on the batch's next photo. The
/// photos are edited at most 640 pixels on a side: the embedder sees 224, and blurring 12 megapixels
/// would cost more than embedding them.
fn edited_copies(pipeline: &Pipeline, batch: &[PathBuf], per_photo: usize, seed: u64) -> Vec<Result<Vec<u8>, ImageError>> {
    let limits = &pipeline.config().limits;
    let photos: Vec<Result<image::RgbImage, ImageError>> = batch
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file).map_err(|e| ImageError::Unreadable(e.to_string()))?;
            let photo = imgfeat::decode::decode(&bytes, limits)?;
            let scale = 640.0 / photo.width().max(photo.height()) as f64;
            Ok(if scale < 1.0 {
                let (w, h) = ((photo.width() as f64 * scale).round().max(1.0), (photo.height() as f64 * scale).round().max(1.0));
                image::imageops::resize(&photo, w as u32, h as u32, image::imageops::FilterType::Triangle)
            } else {
                photo
            })
        })
        .collect();
    photos
        .iter()
        .enumerate()
        .flat_map(|(i, photo)| match photo {
            Ok(photo) => {
                let backdrop = photos[(i + 1) % photos.len()].as_ref().unwrap_or(photo);
                let seed = seed.wrapping_mul(0x1000_0000_01B3) ^ i as u64;
                codes::edits::edited_copies(photo, backdrop, per_photo, seed).into_iter().map(Ok).collect()
            }
            Err(error) => vec![Err(error.clone()); per_photo],
        })
        .collect()
}

/// Whether the row's object feature is its own: a crop that covers the whole image has the whole
/// image's feature.
fn has_own_object(record: &Record) -> bool {
    record.crop != PixelRect::whole(record.width, record.height)
}

/// What an edit did to a photo's features: the whole images' difference, and the objects' when both
/// have one of the same class (a different object is not an edit of the same thing).
fn edit_difference(original: &Record, copy: &Record) -> Vec<Vec<f32>> {
    let minus = |a: &Option<Vec<f32>>, b: &Option<Vec<f32>>| -> Option<Vec<f32>> {
        Some(a.as_ref()?.iter().zip(b.as_ref()?).map(|(x, y)| x - y).collect())
    };
    let mut differences: Vec<Vec<f32>> = minus(&copy.whole_feature, &original.whole_feature).into_iter().collect();
    let class = |r: &Record| r.main_object.as_ref().map(|o| o.class_name.clone());
    if has_own_object(original) && has_own_object(copy) && class(original) == class(copy) {
        differences.extend(minus(&copy.feature, &original.feature));
    }
    differences
}
