//! RandAugment's `ImageEnhance` ops: Color, Contrast, Brightness and
//! Sharpness, each `Image.blend(degenerate, image, factor)` with PIL's
//! arithmetic: `degenerate + factor * (image - degenerate)` in single
//! precision, truncated, clipped to [0, 255] when extrapolating.
//! Images are `[C, H, W]` u8.

/// PIL's `L` value of an RGB pixel (ITU-R 601-2 luma, fixed point).
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `ImagingBlend(degenerate, image, alpha)` into `img`.
fn blend(img: &mut [u8], degenerate: &[u8], alpha: f32) {
    let inside = (0.0..=1.0).contains(&alpha);
    for (v, &d) in img.iter_mut().zip(degenerate) {
        let t = d as i32 as f32 + alpha * (*v as i32 - d as i32) as f32;
        *v = if inside { t as u8 } else if t <= 0.0 { 0 } else if t >= 255.0 { 255 } else { t as u8 };
    }
}

/// `blend` with a constant degenerate image (contrast, brightness): no buffer.
fn blend_const(img: &mut [u8], d: u8, alpha: f32) {
    let inside = (0.0..=1.0).contains(&alpha);
    for v in img.iter_mut() {
        let t = d as i32 as f32 + alpha * (*v as i32 - d as i32) as f32;
        *v = if inside { t as u8 } else if t <= 0.0 { 0 } else if t >= 255.0 { 255 } else { t as u8 };
    }
}

/// The grey version of `img` (`convert("L")`), `[H*W]`.
fn grey(img: &[u8], channels: usize, plane_len: usize) -> Vec<u8> {
    if channels == 1 {
        return img[..plane_len].to_vec();
    }
    (0..plane_len).map(|i| luma(img[i], img[plane_len + i], img[2 * plane_len + i])).collect()
}

/// `ImageEnhance.Color`: blend with the grey image (no effect on grey images).
pub fn color(img: &mut [u8], channels: usize, plane_len: usize, factor: f32) {
    if channels == 1 {
        return;
    }
    let g = grey(img, channels, plane_len);
    let degenerate: Vec<u8> = (0..channels).flat_map(|_| g.iter().copied()).collect();
    blend(img, &degenerate, factor);
}

/// `ImageEnhance.Contrast`: blend with the mean grey level (rounded).
pub fn contrast(img: &mut [u8], channels: usize, plane_len: usize, factor: f32) {
    let g = grey(img, channels, plane_len);
    let mean = (g.iter().map(|&v| v as f64).sum::<f64>() / plane_len as f64 + 0.5) as u8;
    blend_const(img, mean, factor);
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn brightness(img: &mut [u8], factor: f32) {
    blend_const(img, 0, factor);
}

/// `ImageEnhance.Sharpness`: blend with `ImageFilter.SMOOTH` (3x3 kernel
/// `[1 1 1; 1 5 1; 1 1 1] / 13`; the one-pixel border is kept as is).
pub fn sharpness(img: &mut [u8], channels: usize, h: usize, w: usize, factor: f32) {
    let mut degenerate = img.to_vec();
    if h >= 3 && w >= 3 {
        for c in 0..channels {
            let p = &img[c * h * w..(c + 1) * h * w];
            let out = &mut degenerate[c * h * w..(c + 1) * h * w];
            for y in 1..h - 1 {
                for x in 1..w - 1 {
                    let mut s = 0f32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let k = if dy == 1 && dx == 1 { 5.0 } else { 1.0 };
                            s += k / 13.0 * p[(y + dy - 1) * w + x + dx - 1] as f32;
                        }
                    }
                    out[y * w + x] = (s + 0.5).clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    blend(img, &degenerate, factor);
}
