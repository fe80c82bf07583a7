//! FER2013 CSV (`emotion,pixels,Usage`): 48×48 grey faces as 2304
//! space-separated values. Split `train` = Training, `val` = PublicTest,
//! `test` = PrivateTest. A malformed row is rejected with its line number;
//! the rest of the file is packed.

use std::path::{Path, PathBuf};

use super::{Payload, Source, SourceItem};
use crate::error::{Error, Result};

/// Class names in label order.
pub const FER_CLASSES: [&str; 7] = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"];
const SIDE: u32 = 48;
/// A CSV larger than this is refused (the real file is ~300 MB).
const MAX_CSV_BYTES: u64 = 2 << 30;

/// The rows of one split; each row parsed lazily by `load`.
#[derive(Debug)]
pub struct Fer2013Source {
    path: PathBuf,
    text: String,
    /// (1-based line number, byte range of the line) for rows of the split.
    rows: Vec<(usize, std::ops::Range<usize>)>,
    classes: Vec<String>,
}

impl Fer2013Source {
    pub fn open(path: &Path, split: &str) -> Result<Fer2013Source> {
        let usage = match split {
            "" | "train" => "Training",
            "val" => "PublicTest",
            "test" => "PrivateTest",
            other => return Err(Error::InvalidOption(format!("FER2013 split {other:?}: use train, val or test"))),
        };
        let bytes = super::read_bounded(path, MAX_CSV_BYTES).map_err(|r| Error::source(path, r))?;
        let text = String::from_utf8(bytes).map_err(|e| Error::source(path, format!("not UTF-8 text: {e}")))?;
        let mut lines = text.split_inclusive('\n');
        let header = lines.next().unwrap_or("").trim();
        if header.replace(' ', "") != "emotion,pixels,Usage" {
            return Err(Error::source(path, format!("header {header:?} is not emotion,pixels,Usage")));
        }
        let mut rows = Vec::new();
        let mut at = text.find('\n').map_or(text.len(), |n| n + 1);
        for (n, line) in lines.enumerate() {
            let range = at..at + line.len();
            at += line.len();
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            // Rows of other splits are skipped; rows whose usage is unreadable
            // are kept so that `load` rejects them with a reason.
            let row_usage = trimmed.rsplit(',').next().unwrap_or("").trim();
            if row_usage == usage || !["Training", "PublicTest", "PrivateTest"].contains(&row_usage) {
                rows.push((n + 2, range));
            }
        }
        Ok(Fer2013Source {
            path: path.to_path_buf(),
            text,
            rows,
            classes: FER_CLASSES.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// Parses one `emotion,pixels,Usage` row.
pub fn parse_row(line: &str) -> std::result::Result<(u32, Vec<u8>), String> {
    let mut fields = line.trim().split(',');
    let (Some(emotion), Some(pixels), Some(usage), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected 3 fields: emotion,pixels,Usage".into());
    };
    if !["Training", "PublicTest", "PrivateTest"].contains(&usage.trim()) {
        return Err(format!("unknown Usage {:?}", usage.trim()));
    }
    let label: u32 = emotion.trim().parse().map_err(|_| format!("emotion {emotion:?} is not a number"))?;
    if label as usize >= FER_CLASSES.len() {
        return Err(format!("emotion {label} is not in 0..7"));
    }
    let mut data = Vec::with_capacity((SIDE * SIDE) as usize);
    for v in pixels.split_whitespace() {
        let p: u8 = v.parse().map_err(|_| format!("pixel value {v:?} is not 0..255"))?;
        data.push(p);
        if data.len() > (SIDE * SIDE) as usize {
            break;
        }
    }
    if data.len() != (SIDE * SIDE) as usize {
        return Err(format!("{} pixel values, expected {}", data.len(), SIDE * SIDE));
    }
    Ok((label, data))
}

impl Source for Fer2013Source {
    fn kind(&self) -> &'static str {
        "fer2013"
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn name(&self, i: usize) -> String {
        format!("{}:{}", self.path.display(), self.rows[i].0)
    }
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
        let (label, data) = parse_row(&self.text[self.rows[i].1.clone()])?;
        Ok(SourceItem {
            label: Some(label),
            payload: Payload::Pixels {
                width: SIDE,
                height: SIDE,
                channels: 1,
                data,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_rows() {
        let px = vec!["7"; 2304].join(" ");
        let (l, d) = parse_row(&format!("3,{px},Training")).unwrap();
        assert_eq!((l, d.len(), d[0]), (3, 2304, 7));
        assert!(parse_row(&format!("9,{px},Training")).unwrap_err().contains("emotion 9"));
        assert!(parse_row("3,1 2 3,Training").unwrap_err().contains("3 pixel values"));
        assert!(parse_row(&format!("3,{px} 300,Training")).is_err());
        assert!(parse_row("3,Training").is_err());
    }
}
