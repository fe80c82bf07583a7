//! RandAugment's per-pixel ops as PIL computes them (lookup tables per
//! channel): AutoContrast, Equalize, Invert, Posterize, Solarize,
//! SolarizeAdd. Images are `[C, H, W]` u8, each channel a plane.

/// Applies a 256-entry table to every value of a plane.
fn apply_lut(plane: &mut [u8], lut: &[u8; 256]) {
    for v in plane {
        *v = lut[*v as usize];
    }
}

fn histogram(plane: &[u8]) -> [u64; 256] {
    let mut h = [0u64; 256];
    for &v in plane {
        h[v as usize] += 1;
    }
    h
}

/// `ImageOps.autocontrast` (cutoff 0): each channel stretched so that its
/// lowest value becomes 0 and its highest 255 (`int(v * scale + offset)`).
pub fn auto_contrast(img: &mut [u8], plane_len: usize) {
    for plane in img.chunks_mut(plane_len) {
        let h = histogram(plane);
        let lo = h.iter().position(|&c| c > 0).unwrap_or(0);
        let hi = h.iter().rposition(|&c| c > 0).unwrap_or(255);
        if hi <= lo {
            continue;
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        let lut: [u8; 256] = std::array::from_fn(|ix| (ix as f64 * scale + offset).clamp(0.0, 255.0) as i64 as u8);
        apply_lut(plane, &lut);
    }
}

/// `ImageOps.equalize`: each channel's histogram flattened (PIL's integer
/// step `(n - count of the last value) // 256`).
pub fn equalize(img: &mut [u8], plane_len: usize) {
    for plane in img.chunks_mut(plane_len) {
        let h = histogram(plane);
        let used: Vec<u64> = h.iter().copied().filter(|&c| c > 0).collect();
        if used.len() <= 1 {
            continue;
        }
        let step = (used.iter().sum::<u64>() - used[used.len() - 1]) / 256;
        if step == 0 {
            continue;
        }
        let mut n = step / 2;
        let mut lut = [0u8; 256];
        for (i, slot) in lut.iter_mut().enumerate() {
            *slot = (n / step).min(255) as u8;
            n += h[i];
        }
        apply_lut(plane, &lut);
    }
}

/// `ImageOps.invert`.
pub fn invert(img: &mut [u8]) {
    for v in img {
        *v = 255 - *v;
    }
}

/// `ImageOps.posterize`: keeps the top `bits` bits (0 bits: black).
pub fn posterize(img: &mut [u8], bits: u32) {
    if bits >= 8 {
        return;
    }
    let mask = !((1u32 << (8 - bits)) - 1) as u8;
    for v in img {
        *v &= mask;
    }
}

/// `ImageOps.solarize`: values at or above `threshold` inverted.
pub fn solarize(img: &mut [u8], threshold: u32) {
    for v in img {
        if *v as u32 >= threshold {
            *v = 255 - *v;
        }
    }
}

/// timm's `solarize_add`: `add` added (saturating) to values below `threshold`.
pub fn solarize_add(img: &mut [u8], add: u32, threshold: u32) {
    for v in img {
        if (*v as u32) < threshold {
            *v = (*v as u32 + add).min(255) as u8;
        }
    }
}
