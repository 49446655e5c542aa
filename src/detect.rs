//! SSD object detection: the anchor grid, the box coder, per-class NMS and the choice of the main
//! object. The anchors are generated from their parameters (not loaded from a file) so that any SSD
//! exported without its post-processing op runs from configuration alone.

use std::collections::HashSet;
use std::path::Path;

use image::RgbImage;
use serde::Serialize;

use crate::config::{AnchorSpec, Config, DetectorSpec, LabelFormat};
use crate::error::{Error, ImageError};
use crate::model::{Arithmetic, OnnxModel};

/// An anchor box in normalised coordinates, centre and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub cy: f32,
    pub cx: f32,
    pub h: f32,
    pub w: f32,
}

/// A box in normalised image coordinates (0..1), clipped to the image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoundingBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

impl BoundingBox {
    fn area(&self) -> f32 {
        (self.xmax - self.xmin).max(0.0) * (self.ymax - self.ymin).max(0.0)
    }

    /// Intersection over union, 0 for boxes without area.
    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let w = (self.xmax.min(other.xmax) - self.xmin.max(other.xmin)).max(0.0);
        let h = (self.ymax.min(other.ymax) - self.ymin.max(other.ymin)).max(0.0);
        let intersection = w * h;
        let union = self.area() + other.area() - intersection;
        if union <= 0.0 {
            0.0
        } else {
            intersection / union
        }
    }
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// The score column: COCO category id for the COCO detector, label row for OIDv4.
    pub class_id: u32,
    pub class_name: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
    /// The anchor this detection came from; breaks score ties deterministically.
    pub anchor: usize,
}

/// TensorFlow's `ssd_anchor_generator`: per layer, a square grid of centres and a set of
/// (scale, aspect ratio) shapes, ordered row, column, shape.
pub fn generate_anchors(spec: &AnchorSpec) -> Vec<Anchor> {
    let layers = spec.feature_map_sizes.len();
    let scale_of = |i: usize| -> f32 {
        if i >= layers {
            1.0
        } else if layers == 1 {
            spec.min_scale
        } else {
            spec.min_scale + (spec.max_scale - spec.min_scale) * i as f32 / (layers - 1) as f32
        }
    };
    let mut anchors = Vec::new();
    for (layer, &size) in spec.feature_map_sizes.iter().enumerate() {
        let scale = scale_of(layer);
        let shapes: Vec<(f32, f32)> = if layer == 0 && spec.reduce_boxes_in_lowest_layer {
            vec![(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        } else {
            let mut shapes: Vec<(f32, f32)> = spec.aspect_ratios.iter().map(|&ar| (scale, ar)).collect();
            if spec.interpolated_scale_aspect_ratio > 0.0 {
                shapes.push(((scale * scale_of(layer + 1)).sqrt(), spec.interpolated_scale_aspect_ratio));
            }
            shapes
        };
        let step = 1.0 / size as f32;
        for row in 0..size {
            for col in 0..size {
                for &(scale, ar) in &shapes {
                    let ratio = ar.sqrt();
                    anchors.push(Anchor {
                        cy: (row as f32 + 0.5) * step,
                        cx: (col as f32 + 0.5) * step,
                        h: scale / ratio,
                        w: scale * ratio,
                    });
                }
            }
        }
    }
    anchors
}

/// The Faster R-CNN box coder: (ty, tx, th, tw) relative to an anchor → a clipped box.
pub fn decode_box(encoding: &[f32], anchor: &Anchor, scales: &[f32; 4]) -> BoundingBox {
    let cy = encoding[0] / scales[0] * anchor.h + anchor.cy;
    let cx = encoding[1] / scales[1] * anchor.w + anchor.cx;
    let h = (encoding[2] / scales[2]).exp() * anchor.h;
    let w = (encoding[3] / scales[3]).exp() * anchor.w;
    BoundingBox {
        xmin: (cx - w / 2.0).clamp(0.0, 1.0),
        ymin: (cy - h / 2.0).clamp(0.0, 1.0),
        xmax: (cx + w / 2.0).clamp(0.0, 1.0),
        ymax: (cy + h / 2.0).clamp(0.0, 1.0),
    }
}

/// A scored box before NMS.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    class_id: u32,
    score: f32,
    anchor: usize,
    bbox: BoundingBox,
}

/// Best first: higher score, then lower anchor index, then lower class id.
fn by_rank(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.anchor.cmp(&b.anchor)).then(a.class_id.cmp(&b.class_id))
}

/// Greedy NMS within each class, then the best `max_detections` over all classes.
fn non_max_suppression(mut candidates: Vec<Candidate>, iou_threshold: f32, max_detections: usize) -> Vec<Candidate> {
    candidates.sort_by(by_rank);
    let mut kept: Vec<Candidate> = Vec::new();
    for candidate in candidates {
        let suppressed = kept
            .iter()
            .any(|k| k.class_id == candidate.class_id && k.bbox.iou(&candidate.bbox) > iou_threshold);
        if !suppressed {
            kept.push(candidate);
            if kept.len() == max_detections {
                break;
            }
        }
    }
    kept
}

/// A loaded SSD detector with its anchors, labels and thresholds.
#[derive(Debug)]
pub struct Detector {
    model: OnnxModel,
    spec: DetectorSpec,
    anchors: Vec<Anchor>,
    /// Class name per score column (empty where the label file names none).
    labels: Vec<String>,
    /// Score columns the main object may come from; `None` allows all.
    allowed: Option<HashSet<u32>>,
    score_threshold: f32,
    nms_iou_threshold: f32,
    max_detections: usize,
}

impl Detector {
    pub fn load(config: &Config) -> Result<Detector, Error> {
        let spec = config.detector.clone();
        let model = OnnxModel::load(
            &config.resolve(&spec.model),
            &spec.input,
            &[spec.boxes_output.as_str(), spec.scores_output.as_str()],
            &config.engine,
            1,
        )?;
        let labels = load_labels(&config.resolve(&spec.labels), spec.label_format)?;
        let allowed = resolve_allow_list(&config.class_allow_list, &labels)?;
        Ok(Detector {
            model,
            anchors: generate_anchors(&spec.anchors),
            spec,
            labels,
            allowed,
            score_threshold: config.score_threshold,
            nms_iou_threshold: config.nms_iou_threshold,
            max_detections: config.max_detections,
        })
    }

    /// The arithmetic the model runs in, as loaded.
    pub(crate) fn arithmetic(&self) -> &Arithmetic {
        self.model.arithmetic()
    }

    /// All detections above the threshold after NMS, best first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, ImageError> {
        let outputs = self.model.run(&[image])?;
        let (encodings, scores) = (&outputs[0], &outputs[1]);
        let anchors = self.anchors.len();
        let classes = scores.len() / anchors.max(1);
        if encodings.len() != anchors * 4 || scores.len() != anchors * classes {
            return Err(ImageError::Inference {
                model: self.spec.name.clone(),
                message: format!(
                    "outputs have {} box values and {} scores, expected {} anchors (check the anchor spec)",
                    encodings.len(),
                    scores.len(),
                    anchors
                ),
            });
        }
        let mut candidates = Vec::new();
        for (anchor_index, anchor) in self.anchors.iter().enumerate() {
            let row = &scores[anchor_index * classes..(anchor_index + 1) * classes];
            // Column 0 is the background.
            for (class, &raw) in row.iter().enumerate().skip(1) {
                let score = if self.spec.scores_are_logits { sigmoid(raw) } else { raw };
                if score >= self.score_threshold {
                    candidates.push(Candidate {
                        class_id: class as u32,
                        score,
                        anchor: anchor_index,
                        bbox: decode_box(&encodings[anchor_index * 4..anchor_index * 4 + 4], anchor, &self.spec.box_coder_scales),
                    });
                }
            }
        }
        Ok(non_max_suppression(candidates, self.nms_iou_threshold, self.max_detections)
            .into_iter()
            .map(|c| Detection {
                class_id: c.class_id,
                class_name: self.labels.get(c.class_id as usize).cloned().unwrap_or_default(),
                score: c.score,
                bbox: c.bbox,
                anchor: c.anchor,
            })
            .collect())
    }

    /// The object the row is about: the best detection of an allowed class.
    pub fn main_object<'a>(&self, detections: &'a [Detection]) -> Option<&'a Detection> {
        detections.iter().find(|d| self.allowed.as_ref().is_none_or(|allowed| allowed.contains(&d.class_id)))
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Reads a label file into one name per score column.
pub fn load_labels(path: &Path, format: LabelFormat) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_labels(&text, format).map_err(|message| Error::Config(format!("label file {}: {message}", path.display())))
}

fn parse_labels(text: &str, format: LabelFormat) -> Result<Vec<String>, String> {
    let mut labels: Vec<String> = Vec::new();
    for (line_number, line) in text.lines().enumerate() {
        let line = line.trim();
        match format {
            LabelFormat::Rows => labels.push(line.to_string()),
            LabelFormat::NumberedFromZero => {
                if line.is_empty() {
                    continue;
                }
                let (number, name) = line
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("line {}: expected \"<number> <name>\"", line_number + 1))?;
                let id: usize =
                    number.parse().map_err(|_| format!("line {}: {number:?} is not a number", line_number + 1))?;
                let column = id + 1;
                if labels.len() <= column {
                    labels.resize(column + 1, String::new());
                }
                labels[column] = name.trim().to_string();
            }
        }
    }
    Ok(labels)
}

/// Turns allow-list entries (names, case-insensitive, or numeric ids) into score columns.
fn resolve_allow_list(entries: &[String], labels: &[String]) -> Result<Option<HashSet<u32>>, Error> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut allowed = HashSet::new();
    for entry in entries {
        let by_name = labels.iter().position(|l| !l.is_empty() && l.eq_ignore_ascii_case(entry.trim()));
        match (by_name, entry.trim().parse::<u32>()) {
            (Some(column), _) => allowed.insert(column as u32),
            (None, Ok(id)) if (id as usize) < labels.len() && id > 0 => allowed.insert(id),
            _ => {
                return Err(Error::Config(format!(
                    "class_allow_list: {entry:?} is neither a class name of this detector nor a class id in 1..{}",
                    labels.len()
                )))
            }
        };
    }
    Ok(Some(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_count_and_first_anchor() {
        let anchors = generate_anchors(&AnchorSpec::default());
        assert_eq!(anchors.len(), 1917);
        let first = anchors[0];
        assert!((first.cy - 0.5 / 19.0).abs() < 1e-7 && (first.h - 0.1).abs() < 1e-7);
    }

    #[test]
    fn anchors_match_tensorflow() {
        // The fixture was evaluated from TensorFlow's graph; rows are (ymin, xmin, ymax, xmax).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/ssd_anchors_300_1917_yxyx.npy");
        let reference = read_npy_f32(path);
        assert_eq!(reference.len(), 1917 * 4);
        let anchors = generate_anchors(&AnchorSpec::default());
        let mut worst = 0f32;
        for (anchor, tf) in anchors.iter().zip(reference.chunks_exact(4)) {
            let ours = [anchor.cy - anchor.h / 2.0, anchor.cx - anchor.w / 2.0, anchor.cy + anchor.h / 2.0, anchor.cx + anchor.w / 2.0];
            for (a, b) in ours.iter().zip(tf) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst <= 1e-6, "largest difference from TensorFlow's anchors: {worst}");
    }

    /// A minimal reader for a little-endian f32, C-order `.npy` file.
    fn read_npy_f32(path: &str) -> Vec<f32> {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'<f4'") && header.contains("'fortran_order': False"), "{header}");
        bytes[10 + header_len..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    #[test]
    fn box_coder_inverts_the_encoding() {
        let anchor = Anchor { cy: 0.5, cx: 0.4, h: 0.2, w: 0.1 };
        let zero = decode_box(&[0.0, 0.0, 0.0, 0.0], &anchor, &[10.0, 10.0, 5.0, 5.0]);
        let expected = [0.35, 0.4, 0.45, 0.6];
        for (got, want) in [zero.xmin, zero.ymin, zero.xmax, zero.ymax].iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{zero:?}");
        }
        // ty = 10 moves the centre by one anchor height; th = 5 * ln 2 doubles the height.
        let moved = decode_box(&[10.0, 0.0, 5.0 * 2f32.ln(), 0.0], &anchor, &[10.0, 10.0, 5.0, 5.0]);
        assert!((moved.ymin - 0.5).abs() < 1e-6 && (moved.ymax - 0.9).abs() < 1e-6);
        let clipped = decode_box(&[-40.0, 0.0, 0.0, 0.0], &anchor, &[10.0, 10.0, 5.0, 5.0]);
        assert_eq!(clipped.ymin, 0.0);
    }

    fn candidate(class_id: u32, score: f32, anchor: usize, xmin: f32) -> Candidate {
        Candidate { class_id, score, anchor, bbox: BoundingBox { xmin, ymin: 0.0, xmax: xmin + 0.5, ymax: 0.5 } }
    }

    #[test]
    fn nms_suppresses_within_a_class_only() {
        let kept = non_max_suppression(
            vec![
                candidate(1, 0.8, 0, 0.0),
                candidate(1, 0.9, 1, 0.05), // overlaps the first heavily: the first goes
                candidate(2, 0.7, 2, 0.0),  // other class: stays
                candidate(1, 0.6, 3, 0.45), // same class, IoU 0.05/0.95: stays
            ],
            0.6,
            20,
        );
        let order: Vec<(u32, usize)> = kept.iter().map(|c| (c.class_id, c.anchor)).collect();
        assert_eq!(order, vec![(1, 1), (2, 2), (1, 3)]);
    }

    #[test]
    fn nms_breaks_ties_by_anchor_then_class_and_caps_the_count() {
        let kept = non_max_suppression(
            vec![candidate(3, 0.5, 7, 0.0), candidate(2, 0.5, 7, 0.0), candidate(2, 0.5, 4, 0.9)],
            0.6,
            2,
        );
        let order: Vec<(u32, usize)> = kept.iter().map(|c| (c.class_id, c.anchor)).collect();
        assert_eq!(order, vec![(2, 4), (2, 7)]);
    }

    #[test]
    fn coco_labels_are_numbered_from_zero() {
        let labels = parse_labels("0  person\n1  bicycle\n3  motorcycle\n", LabelFormat::NumberedFromZero).unwrap();
        assert_eq!(labels, vec!["", "person", "bicycle", "", "motorcycle"]);
        assert!(parse_labels("x person", LabelFormat::NumberedFromZero).is_err());
    }

    #[test]
    fn allow_list_accepts_names_and_ids() {
        let labels: Vec<String> = ["???", "Bicycle", "Boot", "Mug"].iter().map(|s| s.to_string()).collect();
        let allowed = resolve_allow_list(&["mug".into(), "2".into()], &labels).unwrap().unwrap();
        assert_eq!(allowed, HashSet::from([3, 2]));
        assert!(resolve_allow_list(&["unicorn".into()], &labels).is_err());
        assert!(resolve_allow_list(&[], &labels).unwrap().is_none());
    }
}
