//! A static HTML page for looking at what an extraction found: each image with its detected box and
//! class, the crop that was embedded, the near-duplicate groups side by side, and the rows that
//! failed. Numbers in a Parquet file do not tell a data engineer whether the detector picked the
//! product or the background, or whether a "duplicate" group is a real one; a page they can open
//! does. It is one self-contained file (thumbnails inlined as data URIs, no scripts, no network), so
//! it can be copied off a cluster, attached to a ticket or opened offline.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::{Float32Type, Int32Type};
use base64::Engine;
use image::RgbImage;
use rayon::prelude::*;

use crate::config::Limits;
use crate::crop::PixelRect;
use crate::detect::BoundingBox;
use crate::error::Error;
use crate::features::FeaturesReader;
use crate::search::{DuplicateRule, Index};

/// What the report shows, and how much of it: a features file can have millions of rows, and a page
/// with more than a few thousand images is one nobody scrolls through.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// When two rows are near-duplicates (as for `imgfeat dedup`).
    pub rule: DuplicateRule,
    /// Images shown in the gallery, in path order.
    pub max_images: usize,
    /// Near-duplicate groups shown, largest first.
    pub max_groups: usize,
    /// Longer side of an image's thumbnail, in pixels.
    pub thumbnail_side: u32,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions { rule: DuplicateRule::default(), max_images: 1000, max_groups: 500, thumbnail_side: 240 }
    }
}

/// Members shown per group and failed rows listed: a group of thousands (every blank placeholder
/// image of a shop) or a run where everything failed says what it is in far fewer.
const MAX_MEMBERS_SHOWN: usize = 50;
const MAX_FAILED_SHOWN: usize = 1000;

/// One row of a features file, as the report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub path: String,
    pub size: Option<(u32, u32)>,
    pub class_name: Option<String>,
    pub score: Option<f32>,
    pub bbox: Option<BoundingBox>,
    pub crop: Option<PixelRect>,
    pub error: Option<String>,
}

/// What a written report holds, for the CLI's summary line and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    pub rows: usize,
    pub failed: usize,
    pub groups: usize,
    pub groups_shown: usize,
    pub images_shown: usize,
    /// Images whose file could not be read or decoded again for its thumbnail (shown as a note).
    pub thumbnails_missing: usize,
}

/// Reads the rows of a features table (the CLI's file or a Spark job's directory), in its order.
pub fn read_rows(path: &Path) -> Result<Vec<ReportRow>, Error> {
    let mut rows = Vec::new();
    for batch in FeaturesReader::open(path)?.batches() {
        let batch = batch?;
        let column = |name: &str| batch.column_by_name(name).expect("the features schema has every column");
        let (paths, classes, errors) = (column("path").as_string::<i32>(), column("class_name").as_string::<i32>(), column("error").as_string::<i32>());
        let (widths, heights) = (column("width").as_primitive::<Int32Type>(), column("height").as_primitive::<Int32Type>());
        let scores = column("score").as_primitive::<Float32Type>();
        let (boxes, crops) = (column("box").as_struct(), column("crop").as_struct());
        let [xmin, ymin, xmax, ymax] = [0, 1, 2, 3].map(|i| boxes.column(i).as_primitive::<Float32Type>());
        let [left, top, right, bottom] = [0, 1, 2, 3].map(|i| crops.column(i).as_primitive::<Int32Type>());
        let text = |array: &StringArray, r: usize| (!array.is_null(r)).then(|| array.value(r).to_string());
        for r in 0..batch.num_rows() {
            let size = (!widths.is_null(r) && !heights.is_null(r)).then(|| (widths.value(r).max(0) as u32, heights.value(r).max(0) as u32));
            let bbox = (!boxes.is_null(r))
                .then(|| BoundingBox { xmin: xmin.value(r), ymin: ymin.value(r), xmax: xmax.value(r), ymax: ymax.value(r) });
            let crop = (!crops.is_null(r)).then(|| PixelRect {
                left: left.value(r).max(0) as u32,
                top: top.value(r).max(0) as u32,
                right: right.value(r).max(0) as u32,
                bottom: bottom.value(r).max(0) as u32,
            });
            rows.push(ReportRow {
                path: paths.value(r).to_string(),
                size,
                class_name: text(classes, r),
                score: (!scores.is_null(r)).then(|| scores.value(r)),
                bbox,
                crop,
                error: text(errors, r),
            });
        }
    }
    Ok(rows)
}

/// A row's image, shrunk for the page, and the crop that was embedded, both as JPEG data URIs.
struct Thumbnails {
    image: String,
    crop: Option<String>,
}

/// Reads the row's file again and renders its thumbnails; `Err` says why it could not.
fn render_thumbnails(row: &ReportRow, side: u32) -> Result<Thumbnails, String> {
    // Spark rows carry URIs; only local files can be opened here.
    let path = crate::features::local_path(&row.path);
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    // A JPEG much larger than the thumbnail is decoded at reduced scale (crops keep enough detail).
    let image = crate::decode::decode_scaled(&bytes, &Limits::default(), side)
        .map_err(|e| format!("cannot decode the file: {e}"))?
        .image;
    let crop = match (row.crop, row.size) {
        // Only a crop smaller than the image says something the whole image does not.
        (Some(rect), Some((width, height))) if rect != PixelRect::whole(width, height) => {
            let rect = rect.rescaled((width, height), (image.width(), image.height()));
            Some(data_uri(&crate::crop::crop(&image, rect), side * 2 / 3)?)
        }
        _ => None,
    };
    Ok(Thumbnails { image: data_uri(&image, side)?, crop })
}

fn data_uri(image: &RgbImage, side: u32) -> Result<String, String> {
    let scale = (side as f32 / image.width().max(image.height()) as f32).min(1.0);
    let (width, height) = (((image.width() as f32 * scale).round() as u32).max(1), ((image.height() as f32 * scale).round() as u32).max(1));
    let small = image::imageops::thumbnail(image, width, height);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&small)
        .map_err(|e| format!("cannot encode the thumbnail: {e}"))?;
    Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(jpeg)))
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(path)
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 48px;color:#222;background:#fafafa}
h1{margin:24px 0 4px}h2{margin:32px 0 8px;border-bottom:1px solid #ddd}
.summary{color:#555}nav a{margin-right:16px}
.group{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:12px 0}
.group h3{margin:0 0 8px;font-size:15px}
.members,.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #e4e4e4;border-radius:4px;padding:6px;max-width:380px}
.grid figure{display:flex;gap:6px;flex-wrap:wrap;align-items:flex-start}
figcaption{font-size:12px;color:#444;word-break:break-word;width:0;min-width:100%}
.frame{position:relative;display:inline-block;line-height:0}
.frame img,.crop img{display:block}
.box{position:absolute;border:2px solid #e4572e;box-sizing:border-box}
.box span{position:absolute;left:-2px;top:-18px;background:#e4572e;color:#fff;font-size:11px;line-height:16px;padding:0 4px;white-space:nowrap}
.crop{line-height:0;outline:1px dashed #999}
.more{align-self:center;color:#555}
.missing{width:160px;height:100px;display:flex;align-items:center;justify-content:center;background:#eee;color:#a00;font-size:12px;padding:4px;text-align:center}
.representative{font-weight:600}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
";

/// Writes the report for `features` to `output`; `progress` is called each time a thumbnail is done,
/// with the number of thumbnails in all (images are read and decoded again: the slow part).
pub fn write_report(features: &Path, output: &Path, options: &ReportOptions, progress: &(dyn Fn(usize) + Sync)) -> Result<ReportSummary, Error> {
    // In path order, as the index keeps them: the page depends only on the table's contents, not on
    // the order its rows were written in (Spark's part files come in any order).
    let mut rows = read_rows(features)?;
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    let index = Index::from_table(features)?;
    let position: HashMap<&str, usize> = rows.iter().enumerate().rev().map(|(i, row)| (row.path.as_str(), i)).collect();
    let row_of = |member: usize| -> Result<usize, Error> {
        position.get(index.rows[member].path.as_str()).copied().ok_or_else(|| Error::Read {
            path: features.to_path_buf(),
            message: "the table changed while it was being read".into(),
        })
    };
    let groups = index.duplicate_groups(&options.rule)?;
    let shown_groups = &groups[..groups.len().min(options.max_groups)];
    let gallery: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].error.is_none()).take(options.max_images).collect();

    let mut wanted: Vec<usize> = gallery.clone();
    for members in shown_groups {
        for &member in members.iter().take(MAX_MEMBERS_SHOWN) {
            wanted.push(row_of(member)?);
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    // Each thread holds one decoded photo: a few threads bound the memory on a many-core machine.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads().min(4))
        .build()
        .map_err(|e| Error::Output(format!("cannot start threads: {e}")))?;
    let thumbnails: HashMap<usize, Result<Thumbnails, String>> = pool.install(|| {
        wanted
            .par_iter()
            .map(|&i| {
                let thumbnails = render_thumbnails(&rows[i], options.thumbnail_side);
                progress(wanted.len());
                (i, thumbnails)
            })
            .collect()
    });

    let failed: Vec<&ReportRow> = rows.iter().filter(|r| r.error.is_some()).collect();
    let summary = ReportSummary {
        rows: rows.len(),
        failed: failed.len(),
        groups: groups.len(),
        groups_shown: shown_groups.len(),
        images_shown: gallery.len(),
        thumbnails_missing: thumbnails.values().filter(|t| t.is_err()).count(),
    };

    let mut html = String::new();
    let title = format!("imgfeat report: {}", features.display());
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(&title)
    );
    let _ = write!(
        html,
        "<h1>imgfeat report</h1><p class=\"summary\">{}: {} rows, {} failed. {} near-duplicate groups within {} of {} bits \
         (rows joined, transitively, when any of their object or whole-image codes are that close{}).</p>\n\
         <nav><a href=\"#groups\">Near-duplicate groups</a><a href=\"#images\">Images</a><a href=\"#errors\">Failed rows</a></nav>\n",
        escape(&features.display().to_string()),
        rows.len(),
        failed.len(),
        groups.len(),
        options.rule.max_distance,
        index.code_bits(),
        if options.rule.verify.is_some() { " and the features behind them agree" } else { "" },
    );

    let _ = writeln!(html, "<section id=\"groups\"><h2>Near-duplicate groups ({})</h2>", groups.len());
    if shown_groups.len() < groups.len() {
        let _ = writeln!(html, "<p>Showing the {} largest of {} groups.</p>", shown_groups.len(), groups.len());
    }
    for (g, members) in shown_groups.iter().enumerate() {
        let _ = write!(html, "<div class=\"group\" data-members=\"{}\"><h3>Group {} · {} images</h3><div class=\"members\">", members.len(), g + 1, members.len());
        let representative = members[0];
        for &member in members.iter().take(MAX_MEMBERS_SHOWN) {
            let note = if member == representative {
                "<span class=\"representative\">representative</span>".to_string()
            } else {
                format!("distance {}", index.row_distance(representative, member))
            };
            let i = row_of(member)?;
            let _ = write!(html, "<figure class=\"member\">{}<figcaption>{note} · {}</figcaption></figure>", frame(&rows[i], &thumbnails[&i]), caption(&rows[i]));
        }
        if members.len() > MAX_MEMBERS_SHOWN {
            let _ = write!(html, "<p class=\"more\">and {} more (see <code>imgfeat dedup</code>)</p>", members.len() - MAX_MEMBERS_SHOWN);
        }
        html.push_str("</div></div>\n");
    }
    html.push_str("</section>\n");

    let ok_rows = rows.len() - failed.len();
    let _ = writeln!(html, "<section id=\"images\"><h2>Images ({ok_rows})</h2>");
    if gallery.len() < ok_rows {
        let _ = writeln!(html, "<p>Showing the first {} of {ok_rows} images.</p>", gallery.len());
    }
    html.push_str("<div class=\"grid\">\n");
    for &i in &gallery {
        let row = &rows[i];
        let crop = match &thumbnails[&i] {
            Ok(Thumbnails { crop: Some(crop), .. }) => {
                format!("<div class=\"crop\" title=\"the crop that was embedded\"><img src=\"{crop}\" alt=\"embedded crop\"></div>")
            }
            _ => String::new(),
        };
        let _ = writeln!(html, "<figure class=\"image\">{}{crop}<figcaption>{}</figcaption></figure>", frame(row, &thumbnails[&i]), caption(row));
    }
    html.push_str("</div></section>\n");

    let _ = writeln!(html, "<section id=\"errors\"><h2>Failed rows ({})</h2>", failed.len());
    if !failed.is_empty() {
        html.push_str("<table><tr><th>path</th><th>error</th></tr>\n");
        for row in failed.iter().take(MAX_FAILED_SHOWN) {
            let _ = writeln!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(&row.path), escape(row.error.as_deref().unwrap_or_default()));
        }
        html.push_str("</table>\n");
        if failed.len() > MAX_FAILED_SHOWN {
            let _ = writeln!(html, "<p>and {} more (the <code>error</code> column has them all).</p>", failed.len() - MAX_FAILED_SHOWN);
        }
    }
    html.push_str("</section>\n</body></html>\n");
    std::fs::write(output, html).map_err(|e| Error::io(output, e))?;
    Ok(summary)
}

/// The image with its detected box and label drawn over it, or why it cannot be shown.
fn frame(row: &ReportRow, thumbnails: &Result<Thumbnails, String>) -> String {
    let thumbnails = match thumbnails {
        Ok(thumbnails) => thumbnails,
        Err(why) => return format!("<div class=\"missing\">{}</div>", escape(why)),
    };
    let overlay = match (row.bbox, &row.class_name) {
        (Some(b), Some(class)) => {
            let percent = |v: f32| (v.clamp(0.0, 1.0) * 10000.0).round() / 100.0;
            let (left, top, right, bottom) = (percent(b.xmin), percent(b.ymin), percent(b.xmax), percent(b.ymax));
            format!(
                "<div class=\"box\" style=\"left:{left}%;top:{top}%;width:{}%;height:{}%\"><span>{} {:.2}</span></div>",
                ((right - left).max(0.0) * 100.0).round() / 100.0,
                ((bottom - top).max(0.0) * 100.0).round() / 100.0,
                escape(class),
                row.score.unwrap_or_default()
            )
        }
        _ => String::new(),
    };
    format!("<div class=\"frame\"><img src=\"{}\" alt=\"{}\">{overlay}</div>", thumbnails.image, escape(file_name(&row.path)))
}

fn caption(row: &ReportRow) -> String {
    let what = match (&row.class_name, row.score) {
        (Some(class), Some(score)) => format!("{} {score:.2}", escape(class)),
        _ => "no object detected: whole image embedded".to_string(),
    };
    let size = row.size.map_or(String::new(), |(w, h)| format!(" · {w}×{h}"));
    format!("{what}{size}<br><span title=\"{}\">{}</span>", escape(&row.path), escape(file_name(&row.path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_in_paths_and_errors() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(escape("plain/path.jpg"), "plain/path.jpg");
    }

    #[test]
    fn a_file_that_is_gone_is_a_note_in_the_page_not_a_failure() {
        let row = ReportRow {
            path: "/nonexistent/<gone>.jpg".into(),
            size: Some((10, 10)),
            class_name: None,
            score: None,
            bbox: None,
            crop: None,
            error: None,
        };
        let thumbnails = render_thumbnails(&row, 64);
        let html = frame(&row, &thumbnails);
        assert!(html.starts_with("<div class=\"missing\">cannot read the file"), "{html}");
        assert!(caption(&row).contains("&lt;gone&gt;.jpg"));
    }

    #[test]
    fn the_box_is_drawn_in_percent_of_the_image_with_its_label() {
        let row = ReportRow {
            path: "x.jpg".into(),
            size: Some((10, 10)),
            class_name: Some("cat".into()),
            score: Some(0.876),
            bbox: Some(BoundingBox { xmin: 0.1, ymin: 0.25, xmax: 0.6, ymax: 1.2 }),
            crop: None,
            error: None,
        };
        let thumbnails = Ok(Thumbnails { image: "data:image/jpeg;base64,AA==".into(), crop: None });
        let html = frame(&row, &thumbnails);
        assert!(html.contains("left:10%;top:25%;width:50%;height:75%"), "{html}");
        assert!(html.contains("<span>cat 0.88</span>"), "{html}");
    }
}
