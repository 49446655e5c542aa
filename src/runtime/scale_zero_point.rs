//! How u8 activations stand for f32 values in the int8 products: x ≈ (q − zero_point) · scale. The
//! product that reads them and the depthwise kernel that writes them both need it.

/// 256 levels of a tensor's values: x ≈ (q − zero_point) · scale for q in 0..=255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScaleZeroPoint {
    pub(crate) scale: f32,
    pub(crate) zero_point: i32,
}

impl ScaleZeroPoint {
    /// 256 levels from `min` to `max` (`min` ≤ 0 ≤ `max`, so that 0 is a level).
    pub(crate) fn spanning(min: f32, max: f32) -> ScaleZeroPoint {
        let scale = if max > min { (max - min) / 255.0 } else { 1.0 };
        ScaleZeroPoint { scale, zero_point: (-min / scale).round().clamp(0.0, 255.0) as i32 }
    }
}
