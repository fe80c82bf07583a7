//! Generic ImageFolder: `root/<class>/**/*.{jpg,jpeg,png,...}`, classes in
//! sorted folder-name order (torchvision's ImageFolder order). Files are read
//! lazily, in parallel, by the packer.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{read_bounded, Payload, Source, SourceItem};
use crate::error::{Error, Result};

/// Extensions accepted as images (torchvision's IMG_EXTENSIONS), any case.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];
/// A source file larger than this is rejected without being read.
pub const MAX_INPUT_FILE_BYTES: u64 = 512 << 20;

/// A list of image files with labels.
#[derive(Debug, Default)]
pub struct ImageFolder {
    pub(crate) classes: Vec<String>,
    pub(crate) files: Vec<(PathBuf, Option<u32>)>,
    pub(crate) listing_rejects: Vec<(String, String)>,
    /// Files skipped because their extension is not an image extension.
    pub ignored: u64,
    /// Class folders that hold no image (kept as classes, with a warning).
    pub empty_classes: Vec<String>,
}

/// Sorted names of the entries of `dir`.
pub fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        names.push(ent.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

pub(crate) fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

impl ImageFolder {
    /// Lists `root`: each sub-folder is a class; files directly in `root` are ignored.
    pub fn open(root: &Path) -> Result<ImageFolder> {
        let mut class_dirs = Vec::new();
        let rd = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(root, e))?;
            if ent.path().is_dir() {
                class_dirs.push(ent.file_name());
            }
        }
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(Error::source(root, "no class folders: expected root/<class>/<image files>"));
        }
        let mut out = ImageFolder::default();
        // Folders listed so far, shared by all classes and seeded with the root:
        // a link back to the root or into another class is not followed.
        let mut seen: HashSet<PathBuf> = std::fs::canonicalize(root).into_iter().collect();
        for (label, name) in class_dirs.iter().enumerate() {
            let dir = root.join(name);
            let before = out.files.len();
            out.walk(&dir, Some(label as u32), &mut seen);
            let class = name.to_string_lossy().into_owned();
            if out.files.len() == before {
                out.empty_classes.push(class.clone());
            }
            out.classes.push(class);
        }
        Ok(out)
    }

    /// Lists the image files under `dir` (recursively, sorted, symlinks
    /// followed once; loops and unreadable folders become listing rejects).
    pub(crate) fn walk(&mut self, dir: &Path, label: Option<u32>, seen: &mut HashSet<PathBuf>) {
        let canon = match std::fs::canonicalize(dir) {
            Ok(c) => c,
            Err(e) => {
                self.listing_rejects.push((dir.display().to_string(), format!("cannot resolve folder: {e}")));
                return;
            }
        };
        if !seen.insert(canon) {
            self.listing_rejects.push((dir.display().to_string(), "folder link to a folder already listed (a loop or a duplicate)".into()));
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                self.listing_rejects.push((dir.display().to_string(), format!("cannot list folder: {e}")));
                return;
            }
        };
        entries.sort();
        for p in entries {
            if p.is_dir() {
                self.walk(&p, label, seen);
            } else if has_image_extension(&p) {
                self.files.push((p, label));
            } else {
                self.ignored += 1;
            }
        }
    }
}

impl Source for ImageFolder {
    fn kind(&self) -> &'static str {
        "folder"
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn len(&self) -> usize {
        self.files.len()
    }
    fn name(&self, i: usize) -> String {
        self.files[i].0.display().to_string()
    }
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
        let (path, label) = &self.files[i];
        let bytes = read_bounded(path, MAX_INPUT_FILE_BYTES)?;
        Ok(SourceItem {
            label: *label,
            payload: Payload::File(bytes),
        })
    }
    fn listing_rejects(&self) -> &[(String, String)] {
        &self.listing_rejects
    }
}
