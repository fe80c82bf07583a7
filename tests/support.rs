//! Helpers for the end-to-end tests: generated image trees and source files,
//! and the path of the `srmae` binary.

use std::path::{Path, PathBuf};

use image::{ImageBuffer, Rgb};

/// Where Debian's `dataset-fashion-mnist` installs the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fails with a setup hint when Fashion-MNIST is not installed.
pub fn fashion_mnist() -> PathBuf {
    let p = PathBuf::from(FASHION_MNIST_DIR);
    assert!(
        p.join("t10k-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist (done by .ci/run)"
    );
    p
}

/// A deterministic RGB test pattern (gradients plus a seed-dependent stripe).
pub fn pattern(w: u32, h: u32, seed: u32) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    ImageBuffer::from_fn(w, h, |x, y| {
        let s = seed.wrapping_mul(2654435761);
        Rgb([
            ((x * 255) / w.max(1)) as u8 ^ (s as u8),
            ((y * 255) / h.max(1)) as u8,
            (((x + y + seed) % 16) * 16) as u8,
        ])
    })
}

/// Writes `img` as a JPEG of the given quality.
pub fn write_jpeg(path: &Path, img: &ImageBuffer<Rgb<u8>, Vec<u8>>, quality: u8) {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .expect("encode jpeg");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, out).unwrap();
}

/// Builds `root/<class>/img_<k>.{jpg,png}`: `per_class` images per class,
/// every third one a PNG; sizes vary. Returns the number of images written.
pub fn make_image_folder(root: &Path, classes: &[&str], per_class: u32) -> usize {
    let mut n = 0;
    for (c, class) in classes.iter().enumerate() {
        for k in 0..per_class {
            let seed = c as u32 * 1000 + k;
            let img = pattern(40 + 7 * k % 50, 30 + 11 * k % 60, seed);
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            if k % 3 == 2 {
                img.save(dir.join(format!("img_{k}.png"))).unwrap();
            } else {
                write_jpeg(&dir.join(format!("img_{k}.jpg")), &img, 85);
            }
            n += 1;
        }
    }
    n
}

/// Writes an IDX file of u8 with the given dimensions, gzipped or not.
pub fn write_idx(path: &Path, dims: &[u32], data: &[u8], gz: bool) {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    if gz {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&b).unwrap();
        b = e.finish().unwrap();
    }
    std::fs::write(path, b).unwrap();
}

/// Path of the `srmae` binary, built on first use if needed.
pub fn srmae_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/srmae
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    let bin = profile_dir.join("srmae");
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "--workspace", "--bins"])
            .status()
            .expect("running cargo build for the srmae binary");
        assert!(status.success(), "building the srmae binary failed");
    });
    assert!(bin.is_file(), "srmae binary not found at {}", bin.display());
    bin
}

/// Flips one bit of the byte at `offset` of `path`.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// A safetensors file's header (as JSON; its metadata map has no fixed
/// order on disk) and its tensor bytes.
pub fn safetensors_parts(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}


/// A number from every line of a run's `metrics.jsonl` that has it, at a
/// JSON path (`&["loss"]`, `&["eval", "top1"]`).
pub fn logged(run: &Path, key: &[&str]) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            key.iter().try_fold(&v, |v, k| v.get(*k))?.as_f64()
        })
        .collect()
}
