//! MNIST / Fashion-MNIST IDX files (`*-images-idx3-ubyte[.gz]` with
//! `*-labels-idx1-ubyte[.gz]`), gzipped or not. Both files are validated as a
//! whole (magic, element type, dimensions vs length, counts agree).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Payload, Source, SourceItem};
use crate::error::{Error, Result};

/// Fashion-MNIST class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
];
/// Largest IDX file accepted (after gunzip).
const MAX_IDX_BYTES: u64 = 2 << 30;

/// A parsed IDX array of u8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<u32>,
    pub data: Vec<u8>,
}

/// Reads a file, gunzipping it when it starts with the gzip magic, bounded.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 2];
    let mut raw = Vec::new();
    (&f).take(MAX_IDX_BYTES + 1).read_to_end(&mut raw).map_err(|e| Error::io(path, e))?;
    head.copy_from_slice(raw.get(..2).unwrap_or(&[0, 0]));
    let out = if head == [0x1f, 0x8b] {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::source(path, format!("gzip stream is damaged: {e}")))?;
        out
    } else {
        raw
    };
    if out.len() as u64 > MAX_IDX_BYTES {
        return Err(Error::source(path, "larger than the 2 GiB IDX limit"));
    }
    Ok(out)
}

/// Parses IDX bytes of element type u8 (0x08).
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let bad = |r: String| Error::source(path, r);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("element type {:#04x} is not unsigned byte (0x08)", bytes[2])));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(bad(format!("truncated header ({ndim} dimensions)")));
    }
    let dims: Vec<u32> = (0..ndim)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")))
        .collect();
    let want = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).unwrap_or(u64::MAX);
    let have = (bytes.len() - header) as u64;
    if want != have {
        return Err(bad(format!("dimensions {dims:?} need {want} data bytes, file has {have}")));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Images and labels of one IDX split.
#[derive(Debug)]
pub struct IdxSource {
    images_path: PathBuf,
    classes: Vec<String>,
    height: u32,
    width: u32,
    images: Vec<u8>,
    labels: Vec<u8>,
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

impl IdxSource {
    /// `path` is a folder holding the IDX files (split `train` or `test`), or
    /// an images file whose labels file sits beside it.
    pub fn open(path: &Path, split: &str) -> Result<IdxSource> {
        let (images_path, labels_path) = if path.is_dir() {
            let prefix = match split {
                "" | "train" => "train",
                "test" | "t10k" => "t10k",
                other => {
                    return Err(Error::InvalidOption(format!("IDX split {other:?}: use train or test")));
                }
            };
            let img = find(path, &format!("{prefix}-images-idx3-ubyte"))
                .ok_or_else(|| Error::source(path, format!("no {prefix}-images-idx3-ubyte[.gz]")))?;
            let lab = find(path, &format!("{prefix}-labels-idx1-ubyte"))
                .ok_or_else(|| Error::source(path, format!("no {prefix}-labels-idx1-ubyte[.gz]")))?;
            (img, lab)
        } else {
            let name = path.to_string_lossy();
            let lab = PathBuf::from(name.replace("images-idx3", "labels-idx1"));
            if lab.as_path() == path || !lab.is_file() {
                return Err(Error::source(path, format!("no labels file {} beside it", lab.display())));
            }
            (path.to_path_buf(), lab)
        };
        let images = parse_idx(&images_path, &read_maybe_gz(&images_path)?)?;
        let labels = parse_idx(&labels_path, &read_maybe_gz(&labels_path)?)?;
        if images.dims.len() != 3 {
            return Err(Error::source(&images_path, format!("images need 3 dimensions, found {:?}", images.dims)));
        }
        if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
            return Err(Error::source(
                &labels_path,
                format!("labels {:?} do not match {} images", labels.dims, images.dims[0]),
            ));
        }
        if images.dims[1] == 0 || images.dims[2] == 0 {
            return Err(Error::source(&images_path, "zero-sized images"));
        }
        let fashion = images_path.to_string_lossy().to_lowercase().contains("fashion");
        let classes = if fashion {
            FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            (0..10).map(|d| d.to_string()).collect()
        };
        Ok(IdxSource {
            images_path,
            classes,
            height: images.dims[1],
            width: images.dims[2],
            images: images.data,
            labels: labels.data,
        })
    }
}

impl Source for IdxSource {
    fn kind(&self) -> &'static str {
        "idx"
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn name(&self, i: usize) -> String {
        format!("{}#{i}", self.images_path.display())
    }
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
        let label = self.labels[i];
        if label as usize >= self.classes.len() {
            return Err(format!("label {label} is not one of the {} classes", self.classes.len()));
        }
        let n = (self.width * self.height) as usize;
        Ok(SourceItem {
            label: Some(label as u32),
            payload: Payload::Pixels {
                width: self.width,
                height: self.height,
                channels: 1,
                data: self.images[i * n..(i + 1) * n].to_vec(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_idx() {
        let p = Path::new("x");
        assert!(parse_idx(p, &[0, 0, 8]).is_err());
        assert!(parse_idx(p, &[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
        // 2 elements declared, 1 present
        assert!(parse_idx(p, &[0, 0, 8, 1, 0, 0, 0, 2, 7]).unwrap_err().to_string().contains("need 2"));
        // a huge declared size is a mismatch, not an allocation
        assert!(parse_idx(p, &[0, 0, 8, 2, 255, 255, 255, 255, 255, 255, 255, 255, 0]).is_err());
        let ok = parse_idx(p, &[0, 0, 8, 1, 0, 0, 0, 2, 7, 9]).unwrap();
        assert_eq!(ok.dims, vec![2]);
        assert_eq!(ok.data, vec![7, 9]);
    }
}
