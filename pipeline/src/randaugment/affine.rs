//! RandAugment's geometric ops (Rotate, ShearX/Y, TranslateX/YRel) as PIL's
//! `Image.transform(AFFINE)` with BICUBIC resampling: every output pixel
//! centre `(x + 0.5, y + 0.5)` maps through the inverse matrix to an input
//! position; outside the image it takes the fill colour, inside PIL's cubic
//! convolution (`a = -1`, edge rows and columns clamped) over the 4x4
//! neighbourhood, truncated to u8. Images are `[C, H, W]` u8.

/// `(a, b, c, d, e, f)`: input `(a x + b y + c, d x + e y + f)` for output `(x, y)`.
pub type Affine = [f64; 6];

/// PIL's `BICUBIC` step between four samples.
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// One channel's value at input position `(xin, yin)`, or None outside.
fn sample(plane: &[u8], h: usize, w: usize, xin: f64, yin: f64) -> Option<u8> {
    if !(xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64) {
        return None;
    }
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    let (xf, yf) = (xin.floor(), yin.floor());
    let (dx, dy) = (xin - xf, yin - yf);
    let (x, y) = (xf as i64 - 1, yf as i64 - 1);
    let clip = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let row = |yy: usize| {
        let r = &plane[yy * w..(yy + 1) * w];
        cubic(r[clip(x, w)] as f64, r[clip(x + 1, w)] as f64, r[clip(x + 2, w)] as f64, r[clip(x + 3, w)] as f64, dx)
    };
    let inside = |v: i64| v >= 0 && v < h as i64;
    let v1 = row(clip(y, h));
    let v2 = if inside(y + 1) { row((y + 1) as usize) } else { v1 };
    let v3 = if inside(y + 2) { row((y + 2) as usize) } else { v2 };
    let v4 = if inside(y + 3) { row((y + 3) as usize) } else { v3 };
    let v = cubic(v1, v2, v3, v4, dy);
    Some(if v <= 0.0 { 0 } else if v >= 255.0 { 255 } else { v as u8 })
}

/// `img.transform(size, AFFINE, m, BICUBIC, fillcolor=fill)`.
pub fn transform(img: &mut [u8], channels: usize, h: usize, w: usize, m: &Affine, fill: &[u8]) {
    let src = img.to_vec();
    for c in 0..channels {
        let plane = &src[c * h * w..(c + 1) * h * w];
        let f = fill.get(c).copied().unwrap_or(128);
        for y in 0..h {
            for x in 0..w {
                let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
                let xin = m[0] * xo + m[1] * yo + m[2];
                let yin = m[3] * xo + m[4] * yo + m[5];
                img[(c * h + y) * w + x] = sample(plane, h, w, xin, yin).unwrap_or(f);
            }
        }
    }
}

/// `img.rotate(degrees)` about the centre (PIL's matrix, rounded to 15 digits).
pub fn rotation(degrees: f64, h: usize, w: usize) -> Affine {
    let a = -degrees.to_radians();
    let r = |v: f64| (v * 1e15).round() / 1e15;
    let (cos, sin) = (r(a.cos()), r(a.sin()));
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut m = [cos, sin, 0.0, -sin, cos, 0.0];
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
    m
}

pub fn shear_x(factor: f64) -> Affine {
    [1.0, factor, 0.0, 0.0, 1.0, 0.0]
}

pub fn shear_y(factor: f64) -> Affine {
    [1.0, 0.0, 0.0, factor, 1.0, 0.0]
}

/// Translation by `pixels` (timm's `translate_x_rel`: `pct * width`).
pub fn translate_x(pixels: f64) -> Affine {
    [1.0, 0.0, pixels, 0.0, 1.0, 0.0]
}

pub fn translate_y(pixels: f64) -> Affine {
    [1.0, 0.0, 0.0, 0.0, 1.0, pixels]
}
