//! The main object's pixels: its box widened by a margin, clamped to the image and cut from the
//! original-resolution image, so the embedder sees the object at the best detail the photo has rather
//! than upscaled from the detector's 300x300 input. And the photos pasted into an image (insets: a
//! collage's tiles, a product shot on a banner), which rows and search queries embed on their own.

use image::RgbImage;
use serde::Serialize;

use crate::detect::BoundingBox;
use seams::{Direction, Run, Seams};

mod seams;

/// A pixel rectangle of the decoded image, right and bottom exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PixelRect {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
}

impl PixelRect {
    pub fn whole(width: u32, height: u32) -> PixelRect {
        PixelRect { left: 0, top: 0, right: width, bottom: height }
    }
    pub fn width(&self) -> u32 {
        self.right - self.left
    }
    pub fn height(&self) -> u32 {
        self.bottom - self.top
    }

    /// This rectangle of an image of size `from`, in the same image at size `to` (decoded at another
    /// scale, searched at reduced size, or rewritten since), clamped to it and never empty.
    pub fn rescaled(self, from: (u32, u32), to: (u32, u32)) -> PixelRect {
        let scale = |v: u32, from: u32, to: u32| ((v as u64 * to as u64) / from.max(1) as u64).min(to as u64) as u32;
        let left = scale(self.left, from.0, to.0).min(to.0.saturating_sub(1));
        let top = scale(self.top, from.1, to.1).min(to.1.saturating_sub(1));
        let right = scale(self.right, from.0, to.0).max(left + 1);
        let bottom = scale(self.bottom, from.1, to.1).max(top + 1);
        PixelRect { left, top, right, bottom }
    }
}

/// Fractions of a pixel below this are float noise (0.6 × 100 is 60.000004 in f32), not a reason to
/// round outwards by a whole pixel.
const PIXEL_NOISE: f32 = 1e-3;

/// The box widened by `margin` × its width (height) on each side, clamped to the image and rounded
/// outwards to whole pixels; never empty.
pub fn crop_rect(bbox: &BoundingBox, width: u32, height: u32, margin: f32) -> PixelRect {
    let (w, h) = (width as f32, height as f32);
    let (x0, x1) = (bbox.xmin * w, bbox.xmax * w);
    let (y0, y1) = (bbox.ymin * h, bbox.ymax * h);
    let (dx, dy) = ((x1 - x0) * margin, (y1 - y0) * margin);
    let left = (((x0 - dx).clamp(0.0, w) + PIXEL_NOISE).floor() as u32).min(width - 1);
    let top = (((y0 - dy).clamp(0.0, h) + PIXEL_NOISE).floor() as u32).min(height - 1);
    let right = (((x1 + dx).clamp(0.0, w) - PIXEL_NOISE).ceil() as u32).clamp(left + 1, width);
    let bottom = (((y1 + dy).clamp(0.0, h) - PIXEL_NOISE).ceil() as u32).clamp(top + 1, height);
    PixelRect { left, top, right, bottom }
}

/// Copies the rectangle's pixels out of the image.
pub fn crop(image: &RgbImage, rect: PixelRect) -> RgbImage {
    image::imageops::crop_imm(image, rect.left, rect.top, rect.width(), rect.height()).to_image()
}

/// Regions where another photo seems to have been pasted into this one: a product shot placed on a
/// banner, a photo in a collage, a padded copy. Pasting leaves a seam — a straight, one-pixel-sharp
/// colour step along each side of the inset that is stronger than the texture beside it — which
/// natural edges rarely keep over a long straight run. Such a photo matches its original only through
/// the inset's own pixels, so search embeds these regions of a query, and extraction those of a row.
///
/// Returns up to `max` rectangles, best first, between 15 % and 95 % of the image in each direction:
/// the cells of a grid (a collage), then rectangles with enough sides on a seam ([`InsetSearch`]).
/// Costs ~0.5 ms on a 600×400 photo, as a query or a row (`cargo bench --bench stages -- "inset seams"`).
pub fn inset_rects(image: &RgbImage, max: usize, search: InsetSearch) -> Vec<PixelRect> {
    let (width, height) = image.dimensions();
    if max == 0 || width < 16 || height < 16 {
        return Vec::new();
    }
    // Large photos are searched on a smaller copy: nearest-neighbour sampling keeps a seam one pixel
    // sharp, and memory and time stay bounded (the scan holds ~7 bytes a pixel).
    let longer = width.max(height);
    let side = search.longest_side();
    if longer > side {
        let scale = side as f64 / longer as f64;
        let (w, h) = (((width as f64 * scale).round() as u32).max(1), ((height as f64 * scale).round() as u32).max(1));
        let small = sample_nearest(image, w, h);
        return inset_rects(&small, max, search).into_iter().map(|r| r.rescaled((w, h), (width, height))).collect();
    }
    let columns = Seams::find(image, Direction::Columns, MIN_SIDE);
    let rows = Seams::find(image, Direction::Rows, MIN_SIDE);
    // Sides are the positions of strong seams, and the ends of the seams across them: a side that
    // blends into the background still ends the perpendicular seams.
    // Texture makes long runs of edge pixels too (a striped shirt), and a seam's run may go on into
    // texture, so runs are ranked by how much they stand out from the lines beside them, times their
    // length; each rectangle's sides are then judged on their own span.
    let strongest = |seams: &Seams, extent: u32| -> Vec<Run> {
        let mut runs: Vec<(f32, Run)> = seams
            .runs
            .iter()
            .filter(|r| r.len() as f32 >= MIN_SIDE * extent as f32)
            .map(|r| (seams.contrast(r.position, r.start, r.end), *r))
            .filter(|(contrast, _)| *contrast > 0.0)
            .map(|(contrast, r)| (contrast * r.len() as f32, r))
            .collect();
        runs.sort_by(|a, b| b.0.total_cmp(&a.0));
        runs.into_iter().take(10).map(|(_, r)| r).collect()
    };
    let (vertical, horizontal) = (strongest(&columns, height), strongest(&rows, width));
    let candidates = |across: &[Run], along: &[Run], extent: u32| -> Vec<u32> {
        let mut positions: Vec<u32> = across.iter().map(|r| r.position).chain(along.iter().flat_map(|r| [r.start, r.end])).chain([0, extent]).collect();
        positions.sort_unstable();
        positions.dedup();
        positions
    };
    let xs = candidates(&vertical, &horizontal, width);
    let ys = candidates(&horizontal, &vertical, height);
    let fits = |a: u32, b: u32, extent: u32| (b - a) as f32 >= MIN_SIDE * extent as f32 && (b - a) as f32 <= MAX_SIDE * extent as f32;

    // A side's contrast depends on its position and the span between the two sides across it:
    // computed once per (position, span) rather than once per rectangle. Pairs are of indices.
    let pairs = |positions: &[u32], extent: u32| -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for (i, &a) in positions.iter().enumerate() {
            pairs.extend((i + 1..positions.len()).filter(|&j| fits(a, positions[j], extent)).map(|j| (i, j)));
        }
        pairs
    };
    let (x_pairs, y_pairs) = (pairs(&xs, width), pairs(&ys, height));
    let column_contrast: Vec<Vec<f32>> = y_pairs.iter().map(|&(t, b)| xs.iter().map(|&x| columns.contrast(x, ys[t], ys[b])).collect()).collect();
    let row_contrast: Vec<Vec<f32>> = x_pairs.iter().map(|&(l, r)| ys.iter().map(|&y| rows.contrast(y, xs[l], xs[r])).collect()).collect();

    let mut scored: Vec<(f32, PixelRect)> = Vec::new();
    for (&(l, r), row_contrast) in x_pairs.iter().zip(&row_contrast) {
        for (&(t, b), column_contrast) in y_pairs.iter().zip(&column_contrast) {
            let mut sides = [column_contrast[l], column_contrast[r], row_contrast[t], row_contrast[b]];
            if sides.iter().filter(|&&c| c < MIN_SEAM_CONTRAST).count() > search.sides_off_seam() {
                continue;
            }
            sides.sort_by(f32::total_cmp);
            let rect = PixelRect { left: xs[l], top: ys[t], right: xs[r], bottom: ys[b] };
            // With a side missing, any position inside the perpendicular seams scores the same; the
            // largest such rectangle is the one their ends (or the border) bound.
            let area = (rect.width() as f32 * rect.height() as f32) / (width as f32 * height as f32);
            scored.push((sides[1] + sides[2] + sides[3] + 0.5 * sides[0] + 0.05 * area, rect));
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    // The cells of a grid come first: a collage's corner tile has only two sides on a seam (the other
    // two are the image's border), so the three-seam rule above misses it.
    let mut chosen: Vec<PixelRect> = Vec::new();
    for rect in grid_cells(&columns, &rows, width, height).into_iter().chain(scored.into_iter().map(|(_, rect)| rect)) {
        if chosen.len() == max {
            break;
        }
        if chosen.iter().all(|c| rect_iou(c, &rect) < 0.6) && !is_one_colour(image, &rect) {
            chosen.push(rect);
        }
    }
    chosen
}

/// A `width`×`height` copy of the image that takes, for each pixel, the source pixel under its centre:
/// the pixels `image::imageops::FilterType::Nearest` picks, without its two passes through f32 (which
/// took longer than the seam search itself).
fn sample_nearest(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let source = |out: u32, from: u32, to: u32| ((((out as f32 + 0.5) * (from as f32 / to as f32)).floor() as u32).min(from - 1)) as usize;
    let columns: Vec<usize> = (0..width).map(|x| 3 * source(x, image.width(), width)).collect();
    let line = 3 * image.width() as usize;
    let mut pixels = Vec::with_capacity(3 * width as usize * height as usize);
    for y in 0..height {
        let row = &image.as_raw()[source(y, image.height(), height) * line..];
        for &x in &columns {
            pixels.extend_from_slice(&row[x..x + 3]);
        }
    }
    RgbImage::from_raw(width, height, pixels).expect("width × height pixels")
}

/// The cells of a collage: the image split on its full-length seams (straight seams that cross the
/// whole image, as between the tiles of a grid), largest first. Empty when there are none, or when a
/// cell would be smaller than `MIN_SIDE` of the image either way.
fn grid_cells(columns: &Seams, rows: &Seams, width: u32, height: u32) -> Vec<PixelRect> {
    let cuts = |seams: &Seams, extent: u32, length: u32| -> Vec<u32> {
        let inside = MIN_SIDE * extent as f32..=(1.0 - MIN_SIDE) * extent as f32;
        let positions: Vec<u32> = seams
            .runs
            .iter()
            .filter(|r| r.len() as f32 >= FULL_LENGTH * length as f32 && inside.contains(&(r.position as f32)))
            .filter(|r| seams.contrast(r.position, 0, length) >= MIN_SEAM_CONTRAST)
            .map(|r| r.position)
            .collect();
        // A seam is marked on the boundaries beside it too: one cut, in the middle of each cluster.
        let mut cuts = vec![0];
        for cluster in positions.chunk_by(|a, b| b - a <= 2) {
            cuts.push(cluster[cluster.len() / 2]);
        }
        cuts.push(extent);
        cuts
    };
    let (xs, ys) = (cuts(columns, width, height), cuts(rows, height, width));
    if xs.len() == 2 && ys.len() == 2 {
        return Vec::new();
    }
    let fits = |cuts: &[u32], extent: u32| cuts.windows(2).all(|w| (w[1] - w[0]) as f32 >= MIN_SIDE * extent as f32);
    if !fits(&xs, width) || !fits(&ys, height) {
        return Vec::new();
    }
    let mut cells: Vec<PixelRect> =
        ys.windows(2).flat_map(|y| xs.windows(2).map(move |x| PixelRect { left: x[0], top: y[0], right: x[1], bottom: y[1] })).collect();
    cells.sort_by_key(|c| std::cmp::Reverse(c.width() * c.height()));
    cells
}

/// What [`inset_rects`] is searching for, which sets how much evidence a region needs and how much
/// time the search may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsetSearch {
    /// The photo a user searches with: its insets are embedded once, so any rectangle with three sides
    /// on a seam is worth an embedding (the fourth may blend into the background or lie on the
    /// image's border); searched at up to 1024 pixels a side.
    Query,
    /// Every row a table stores, where each inset costs an embedding and row space on every photo that
    /// seems to have one: only rectangles with all four sides on a seam, and the cells of a grid. It
    /// fires on 4 % of photos 1–300 and 11 % of photos 401–700 of the evaluation set (ordinary photos;
    /// the query rule fires on about a third of them); searched at up to 512 pixels a side.
    Row,
}

impl InsetSearch {
    /// The longest side the seam search works on (larger images are sampled down to it, nearest
    /// neighbour, which keeps a seam one pixel sharp).
    fn longest_side(self) -> u32 {
        match self {
            InsetSearch::Query => 1024,
            InsetSearch::Row => 512,
        }
    }

    /// How many sides of a rectangle may be off a seam.
    fn sides_off_seam(self) -> usize {
        match self {
            InsetSearch::Query => 1,
            InsetSearch::Row => 0,
        }
    }
}

/// An inset's side spans at least this fraction of the image (smaller ones carry too few pixels to
/// embed) and at most `MAX_SIDE` (larger is the whole image, embedded anyway).
const MIN_SIDE: f32 = 0.15;
const MAX_SIDE: f32 = 0.95;
/// A seam this much of the image long crosses it: a cut between the tiles of a collage.
const FULL_LENGTH: f32 = 0.9;
/// How much more of a side lies on seam pixels than of the lines 4 and 8 pixels either side of it.
const MIN_SEAM_CONTRAST: f32 = 0.2;
/// Whether the region is (nearly) one colour: a sticker, a label or a flat box drawn over the photo,
/// not a photo pasted into it. Its embedding would match any other flat region or a blank
/// placeholder image, joining unrelated photos through them. On the evaluation set, pasted photos'
/// channels vary by 28 or more (standard deviation); the threshold is a quarter of that. Sampled every
/// fourth pixel each way, 5 % in from the sides (a side found on a seam may be a few pixels out).
fn is_one_colour(image: &RgbImage, rect: &PixelRect) -> bool {
    let (mut n, mut sum, mut squares) = (0f64, [0f64; 3], [0f64; 3]);
    let margin = |side: u32| (side / 20).max(2).min(side / 4);
    let (dx, dy) = (margin(rect.width()), margin(rect.height()));
    for y in (rect.top + dy..rect.bottom - dy).step_by(4) {
        for x in (rect.left + dx..rect.right - dx).step_by(4) {
            let pixel = image.get_pixel(x, y).0;
            for c in 0..3 {
                sum[c] += pixel[c] as f64;
                squares[c] += (pixel[c] as f64).powi(2);
            }
            n += 1.0;
        }
    }
    (0..3).all(|c| (squares[c] / n - (sum[c] / n).powi(2)).max(0.0).sqrt() < MIN_PHOTO_DEVIATION)
}

/// The standard deviation of a channel below which a region counts as one colour.
const MIN_PHOTO_DEVIATION: f64 = 8.0;

fn rect_iou(a: &PixelRect, b: &PixelRect) -> f32 {
    let w = a.right.min(b.right).saturating_sub(a.left.max(b.left)) as f32;
    let h = a.bottom.min(b.bottom).saturating_sub(a.top.max(b.top)) as f32;
    let area = |r: &PixelRect| r.width() as f32 * r.height() as f32;
    let intersection = w * h;
    intersection / (area(a) + area(b) - intersection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(xmin: f32, ymin: f32, xmax: f32, ymax: f32) -> BoundingBox {
        BoundingBox { xmin, ymin, xmax, ymax }
    }

    #[test]
    fn margin_widens_each_side_and_rounds_outwards() {
        // 100x50 image, box x 0.2..0.6 (20..60 px), y 0.2..0.6 (10..30 px); 10 % margin adds 4 px and 2 px.
        let rect = crop_rect(&bbox(0.2, 0.2, 0.6, 0.6), 100, 50, 0.1);
        assert_eq!(rect, PixelRect { left: 16, top: 8, right: 64, bottom: 32 });
        let rect = crop_rect(&bbox(0.205, 0.2, 0.6, 0.6), 100, 50, 0.0);
        assert_eq!((rect.left, rect.right), (20, 60));
    }

    #[test]
    fn clamped_to_the_image_and_never_empty() {
        assert_eq!(crop_rect(&bbox(0.0, 0.0, 1.0, 1.0), 640, 480, 0.1), PixelRect::whole(640, 480));
        let sliver = crop_rect(&bbox(1.0, 1.0, 1.0, 1.0), 640, 480, 0.1);
        assert_eq!(sliver, PixelRect { left: 639, top: 479, right: 640, bottom: 480 });
    }

    #[test]
    fn rescaled_maps_a_rect_onto_another_size_and_never_empties_it() {
        let rect = PixelRect { left: 100, top: 50, right: 300, bottom: 250 };
        assert_eq!(rect.rescaled((400, 300), (200, 150)), PixelRect { left: 50, top: 25, right: 150, bottom: 125 });
        let edge = PixelRect { left: 399, top: 299, right: 400, bottom: 300 };
        let mapped = edge.rescaled((400, 300), (4, 3));
        assert!(mapped.right > mapped.left && mapped.bottom > mapped.top && mapped.right <= 4 && mapped.bottom <= 3, "{mapped:?}");
    }

    #[test]
    fn crop_copies_the_pixels() {
        let image = RgbImage::from_fn(10, 10, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let cut = crop(&image, PixelRect { left: 2, top: 3, right: 5, bottom: 7 });
        assert_eq!(cut.dimensions(), (3, 4));
        assert_eq!(cut.get_pixel(0, 0).0, [2, 3, 0]);
        assert_eq!(cut.get_pixel(2, 3).0, [4, 6, 0]);
    }

    /// A "background" photo of sharp diagonal stripes (edges everywhere, none straight along a row or
    /// column) with a smooth "photo" pasted into it.
    fn pasted(width: u32, height: u32, inset: PixelRect) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            if x >= inset.left && x < inset.right && y >= inset.top && y < inset.bottom {
                image::Rgb([(60 + x * 120 / width) as u8, (90 + y * 120 / height) as u8, 140])
            } else {
                let n = (((x + 2 * y) / 20) % 2 * 60) as u8;
                image::Rgb([170 + n / 2, 140 + n, 90 + n])
            }
        })
    }

    #[test]
    fn a_pasted_photo_is_found_within_a_pixel() {
        let inset = PixelRect { left: 90, top: 40, right: 300, bottom: 200 };
        let found = inset_rects(&pasted(400, 300, inset), 3, InsetSearch::Query);
        assert!(!found.is_empty());
        let best = found[0];
        let near = |a: u32, b: u32| a.abs_diff(b) <= 1;
        assert!(near(best.left, 90) && near(best.top, 40) && near(best.right, 300) && near(best.bottom, 200), "{found:?}");
    }

    #[test]
    fn an_inset_touching_the_border_is_found_from_its_three_seams() {
        let inset = PixelRect { left: 0, top: 50, right: 180, bottom: 220 };
        let found = inset_rects(&pasted(400, 300, inset), 3, InsetSearch::Query);
        assert!(found.iter().any(|r| rect_iou(r, &inset) > 0.95), "{found:?}");
    }

    #[test]
    fn the_tiles_of_a_collage_are_found_corners_included() {
        // A 2×2 grid of the striped background and three smooth "photos": the corner tiles have only
        // two sides on a seam, the other two on the image's border.
        let (width, height) = (400, 300);
        let collage = RgbImage::from_fn(width, height, |x, y| {
            let tile = (x >= width / 2) as u32 + 2 * (y >= height / 2) as u32;
            match tile {
                0 => image::Rgb([(60 + x * 120 / width) as u8, (90 + y * 120 / height) as u8, 140]),
                1 => image::Rgb([200, (40 + y / 3) as u8, (x / 4) as u8]),
                2 => {
                    let n = (((x + 2 * y) / 20) % 2 * 60) as u8;
                    image::Rgb([170 + n / 2, 140 + n, 90 + n])
                }
                _ => image::Rgb([30, 60, (100 + x / 5) as u8]),
            }
        });
        let found = inset_rects(&collage, 4, InsetSearch::Query);
        for (left, top) in [(0, 0), (200, 0), (0, 150), (200, 150)] {
            let tile = PixelRect { left, top, right: left + 200, bottom: top + 150 };
            assert!(found.iter().any(|r| rect_iou(r, &tile) > 0.95), "tile at ({left}, {top}) not in {found:?}");
        }
        // A single pasted photo crosses no full-length seam: no grid.
        let single = pasted(width, height, PixelRect { left: 90, top: 40, right: 300, bottom: 200 });
        let columns = Seams::find(&single, Direction::Columns, MIN_SIDE);
        let rows = Seams::find(&single, Direction::Rows, MIN_SIDE);
        assert!(grid_cells(&columns, &rows, width, height).is_empty());
    }

    #[test]
    fn rows_take_only_insets_with_every_side_on_a_seam_or_a_grids_cells() {
        // Pasted in the middle: four seams, found for a row as for a query.
        let inset = PixelRect { left: 90, top: 40, right: 300, bottom: 200 };
        let found = inset_rects(&pasted(400, 300, inset), 3, InsetSearch::Row);
        assert!(found.iter().any(|r| rect_iou(r, &inset) > 0.95), "{found:?}");
        // Against the left border: three seams are enough for a query, not for a row.
        let border = PixelRect { left: 0, top: 50, right: 180, bottom: 220 };
        let image = pasted(400, 300, border);
        assert!(inset_rects(&image, 3, InsetSearch::Query).iter().any(|r| rect_iou(r, &border) > 0.95));
        assert!(inset_rects(&image, 3, InsetSearch::Row).iter().all(|r| rect_iou(r, &border) < 0.6));
    }

    #[test]
    fn a_flat_sticker_is_not_a_pasted_photo() {
        // The striped background with a one-colour box where the photo was: four seams, no photo.
        let sticker = PixelRect { left: 90, top: 40, right: 300, bottom: 200 };
        let image = RgbImage::from_fn(400, 300, |x, y| {
            if x >= sticker.left && x < sticker.right && y >= sticker.top && y < sticker.bottom {
                image::Rgb([240, 200, 20])
            } else {
                let n = (((x + 2 * y) / 20) % 2 * 60) as u8;
                image::Rgb([170 + n / 2, 140 + n, 90 + n])
            }
        });
        let near = |a: u32, b: u32| a.abs_diff(b) <= 8;
        for search in [InsetSearch::Query, InsetSearch::Row] {
            let found = inset_rects(&image, 3, search);
            let sticker_found = |r: &PixelRect| near(r.left, 90) && near(r.top, 40) && near(r.right, 300) && near(r.bottom, 200);
            assert!(!found.iter().any(sticker_found), "{search:?}: {found:?}");
        }
    }

    #[test]
    fn texture_and_smooth_gradients_are_not_insets() {
        let mut state = 1u32;
        let noise = RgbImage::from_fn(320, 240, |_, _| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let v = (state >> 24) as u8;
            image::Rgb([v, v / 2, 255 - v])
        });
        assert_eq!(inset_rects(&noise, 3, InsetSearch::Query), Vec::<PixelRect>::new());
        let gradient = RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, 128]));
        assert_eq!(inset_rects(&gradient, 3, InsetSearch::Query), Vec::<PixelRect>::new());
        assert_eq!(inset_rects(&RgbImage::new(8, 8), 3, InsetSearch::Query), Vec::<PixelRect>::new());
    }

    #[test]
    fn nearest_sampling_picks_the_pixels_the_image_crate_picks() {
        let mut state = 7u32;
        let image = RgbImage::from_fn(613, 401, |_, _| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            image::Rgb([(state >> 24) as u8, (state >> 16) as u8, (state >> 8) as u8])
        });
        for (w, h) in [(512, 335), (300, 511), (613, 401), (77, 1)] {
            assert_eq!(sample_nearest(&image, w, h), image::imageops::resize(&image, w, h, image::imageops::FilterType::Nearest), "{w}x{h}");
        }
    }

    #[test]
    fn a_large_photo_is_searched_at_reduced_size_and_answered_in_its_own_pixels() {
        // The 400x300 picture above, 10 times larger (each pixel a 10x10 block).
        let small = pasted(400, 300, PixelRect { left: 90, top: 40, right: 300, bottom: 200 });
        let large = image::imageops::resize(&small, 4000, 3000, image::imageops::FilterType::Nearest);
        let inset = PixelRect { left: 900, top: 400, right: 3000, bottom: 2000 };
        let found = inset_rects(&large, 3, InsetSearch::Query);
        assert!(found.iter().any(|r| rect_iou(r, &inset) > 0.98), "{found:?}");
        assert!(inset_rects(&large, 0, InsetSearch::Query).is_empty(), "max 0 finds nothing");
    }
}
