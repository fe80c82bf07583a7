//! ImageNet ILSVRC-2012 layout. `train/<wnid>/*.JPEG`; `val/` either sorted
//! into wnid folders, or flat with labels from the Kaggle `LOC_val_solution.csv`
//! or from `ILSVRC2012_validation_ground_truth.txt` plus the devkit synset
//! order. Class index = sorted wnid order, as torchvision's ImageFolder.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::folder::ImageFolder;
use super::{Source, SourceItem, SourceOptions};
use crate::error::{Error, Result};

/// An ImageNet split, listed.
pub struct ImageNetSource(ImageFolder);

/// Opens `root` (the folder holding `train/` and `val/`, or a split folder itself).
pub fn open(root: &Path, opts: &SourceOptions) -> Result<ImageNetSource> {
    let split = if opts.split.is_empty() { "train" } else { opts.split.as_str() };
    let split_dir = if root.join(split).is_dir() { root.join(split) } else { root.to_path_buf() };
    let has_subdirs = std::fs::read_dir(&split_dir)
        .map_err(|e| Error::io(&split_dir, e))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().is_dir());
    if has_subdirs {
        return Ok(ImageNetSource(ImageFolder::open(&split_dir)?));
    }
    open_flat_val(root, &split_dir, opts).map(ImageNetSource)
}

/// Where a flat val folder's label file may live.
fn find_labels(root: &Path, split_dir: &Path) -> Option<PathBuf> {
    let names = ["LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt"];
    let mut dirs = vec![root.to_path_buf(), split_dir.to_path_buf(), root.join("devkit/data")];
    dirs.extend(root.ancestors().skip(1).take(4).map(Path::to_path_buf));
    dirs.iter().flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
}

fn open_flat_val(root: &Path, split_dir: &Path, opts: &SourceOptions) -> Result<ImageFolder> {
    let labels_path = opts.val_labels.clone().or_else(|| find_labels(root, split_dir)).ok_or_else(|| {
        Error::source(
            split_dir,
            "flat val folder without labels: pass --val-labels LOC_val_solution.csv \
             (or ILSVRC2012_validation_ground_truth.txt with --synsets)",
        )
    })?;
    let text = std::fs::read_to_string(&labels_path).map_err(|e| Error::io(&labels_path, e))?;
    let by_stem: HashMap<String, String> = if labels_path.extension().is_some_and(|e| e == "csv") {
        parse_loc_csv(&labels_path, &text)?
    } else {
        let synsets_path = opts.synsets.as_ref().ok_or_else(|| {
            Error::source(&labels_path, "ground-truth ids need the devkit synset order: pass --synsets FILE")
        })?;
        let synsets = std::fs::read_to_string(synsets_path).map_err(|e| Error::io(synsets_path, e))?;
        parse_ground_truth(&labels_path, &text, &synsets)?
    };
    // Class order: the train folder's wnids when present, else the labels'.
    let train = root.join("train");
    let classes: Vec<String> = if train.is_dir() && split_dir != train {
        let mut c: Vec<String> = std::fs::read_dir(&train)
            .map_err(|e| Error::io(&train, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        c.sort();
        c
    } else {
        by_stem.values().cloned().collect::<BTreeSet<_>>().into_iter().collect()
    };
    let index: HashMap<&str, u32> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    let mut out = ImageFolder {
        classes: classes.clone(),
        ..Default::default()
    };
    let mut all = ImageFolder::default();
    all.walk(split_dir, None, &mut HashSet::new());
    out.listing_rejects = all.listing_rejects;
    out.ignored = all.ignored;
    for (path, _) in all.files {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match by_stem.get(&stem).map(|w| (w, index.get(w.as_str()))) {
            Some((_, Some(&label))) => out.files.push((path, Some(label))),
            Some((wnid, None)) => out
                .listing_rejects
                .push((path.display().to_string(), format!("label {wnid} is not a class of the train split"))),
            None => out
                .listing_rejects
                .push((path.display().to_string(), format!("no label in {}", labels_path.display()))),
        }
    }
    Ok(out)
}

/// `ImageId,PredictionString` rows; the label is the first wnid of the string.
pub fn parse_loc_csv(path: &Path, text: &str) -> Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (id, pred) = line
            .split_once(',')
            .ok_or_else(|| Error::source(path, format!("line {}: expected ImageId,PredictionString", n + 1)))?;
        let wnid = pred
            .split_whitespace()
            .next()
            .ok_or_else(|| Error::source(path, format!("line {}: empty PredictionString", n + 1)))?;
        map.insert(id.trim().to_string(), wnid.to_string());
    }
    Ok(map)
}

/// Line k of the ground truth is the 1-based ILSVRC2012_ID of
/// `ILSVRC2012_val_{k:08}`; line j of `synsets` is the wnid of ID j.
pub fn parse_ground_truth(path: &Path, text: &str, synsets: &str) -> Result<HashMap<String, String>> {
    let wnids: Vec<&str> = synsets.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let mut map = HashMap::new();
    for (k, line) in text.lines().enumerate() {
        let id: usize = line
            .trim()
            .parse()
            .map_err(|_| Error::source(path, format!("line {}: {line:?} is not a class id", k + 1)))?;
        let wnid = id
            .checked_sub(1)
            .and_then(|j| wnids.get(j))
            .ok_or_else(|| Error::source(path, format!("line {}: id {id} is not in the synset list", k + 1)))?;
        map.insert(format!("ILSVRC2012_val_{:08}", k + 1), wnid.to_string());
    }
    Ok(map)
}

impl Source for ImageNetSource {
    fn kind(&self) -> &'static str {
        "imagenet"
    }
    fn classes(&self) -> &[String] {
        self.0.classes()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn name(&self, i: usize) -> String {
        self.0.name(i)
    }
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
        self.0.load(i)
    }
    fn listing_rejects(&self) -> &[(String, String)] {
        self.0.listing_rejects()
    }
}

