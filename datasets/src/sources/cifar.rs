//! CIFAR-10 / CIFAR-100 binary batches. CIFAR-10: records of 1 label byte +
//! 3072 pixel bytes (`data_batch_{1..5}.bin` train, `test_batch.bin` test).
//! CIFAR-100: 1 coarse + 1 fine label byte + 3072 (`train.bin`, `test.bin`);
//! the fine label is used. Pixels are planar (R, G, B planes of 32×32) on disk
//! and become interleaved HWC here.

use std::path::{Path, PathBuf};

use super::{Payload, Source, SourceItem};
use crate::error::{Error, Result};

const PIXELS: usize = 32 * 32 * 3;
/// CIFAR-10 names (batches.meta.txt order).
const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// One split of CIFAR-10 or CIFAR-100, held in memory.
#[derive(Debug)]
pub struct CifarSource {
    fine: bool,
    classes: Vec<String>,
    /// (file number, record within the file, label).
    records: Vec<(usize, u32, u8)>,
    files: Vec<PathBuf>,
    data: Vec<Vec<u8>>,
}

fn names_file(dir: &Path, name: &str, expect: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    (names.len() == expect).then_some(names)
}

impl CifarSource {
    /// Opens the batches of `split` (`train` or `test`) under `dir`.
    pub fn open(dir: &Path, hundred: bool, split: &str) -> Result<CifarSource> {
        let files: Vec<PathBuf> = match (hundred, split) {
            (false, "" | "train") => (1..=5).map(|k| dir.join(format!("data_batch_{k}.bin"))).collect(),
            (false, "test") => vec![dir.join("test_batch.bin")],
            (true, "" | "train") => vec![dir.join("train.bin")],
            (true, "test") => vec![dir.join("test.bin")],
            (_, other) => return Err(Error::InvalidOption(format!("CIFAR split {other:?}: use train or test"))),
        };
        let record = PIXELS + if hundred { 2 } else { 1 };
        let classes = if hundred {
            names_file(dir, "fine_label_names.txt", 100).unwrap_or_else(|| (0..100).map(|i| i.to_string()).collect())
        } else {
            names_file(dir, "batches.meta.txt", 10)
                .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect())
        };
        let mut out = CifarSource {
            fine: hundred,
            classes,
            records: Vec::new(),
            files: files.clone(),
            data: Vec::new(),
        };
        for (fi, path) in files.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            if bytes.is_empty() || bytes.len() % record != 0 {
                return Err(Error::source(
                    path,
                    format!("{} bytes is not a whole number of {record}-byte records", bytes.len()),
                ));
            }
            for r in 0..bytes.len() / record {
                let label = bytes[r * record + if hundred { 1 } else { 0 }];
                out.records.push((fi, r as u32, label));
            }
            out.data.push(bytes);
        }
        Ok(out)
    }
}

impl Source for CifarSource {
    fn kind(&self) -> &'static str {
        if self.fine {
            "cifar100"
        } else {
            "cifar10"
        }
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn len(&self) -> usize {
        self.records.len()
    }
    fn name(&self, i: usize) -> String {
        let (f, r, _) = self.records[i];
        format!("{}#{r}", self.files[f].display())
    }
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
        let (f, r, label) = self.records[i];
        if label as usize >= self.classes.len() {
            return Err(format!("label {label} is not one of the {} classes", self.classes.len()));
        }
        let record = PIXELS + if self.fine { 2 } else { 1 };
        let start = r as usize * record + record - PIXELS;
        let planar = &self.data[f][start..start + PIXELS];
        let mut hwc = vec![0u8; PIXELS];
        for p in 0..1024 {
            for c in 0..3 {
                hwc[p * 3 + c] = planar[c * 1024 + p];
            }
        }
        Ok(SourceItem {
            label: Some(label as u32),
            payload: Payload::Pixels {
                width: 32,
                height: 32,
                channels: 3,
                data: hwc,
            },
        })
    }
}
