//! Broken inputs of many kinds: the pack finishes, names each bad file with a
//! reason, and packs everything else. Corrupted shards are detected.

use std::path::Path;

use srmae_datasets::format::manifest::SourceInfo;
use srmae_datasets::format::reader::Shard;
use srmae_datasets::sources::folder::ImageFolder;
use srmae_datasets::{pack, Encoding, Error, PackOptions, PackedDataset};
use srmae_e2e::*;

/// A PNG header declaring `w`x`h` (the IHDR chunk only, CRC included).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut b = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    b.extend_from_slice(&ihdr);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// A copy of a baseline JPEG whose frame header (SOF0) declares `w`x`h`.
fn with_sof_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg.to_vec();
    let at = b.windows(2).position(|p| p == [0xff, 0xc0]).expect("baseline JPEG has SOF0");
    b[at + 5..at + 7].copy_from_slice(&h.to_be_bytes());
    b[at + 7..at + 9].copy_from_slice(&w.to_be_bytes());
    b
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Builds a folder of good and bad inputs; returns (good count, bad file names).
fn hostile_tree(root: &Path) -> (usize, Vec<&'static str>) {
    let good = make_image_folder(root, &["good", "mixed"], 4);
    let m = root.join("mixed");
    let jpeg = std::fs::read(m.join("img_0.jpg")).unwrap();
    std::fs::write(m.join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(m.join("empty.jpg"), b"").unwrap();
    std::fs::write(m.join("text.jpg"), b"this is not an image at all\n").unwrap();
    std::fs::write(m.join("huge.jpg"), with_sof_size(&jpeg, 60_000, 60_000)).unwrap();
    std::fs::write(m.join("header_only.png"), png_header(100_000, 100_000)).unwrap();
    std::os::unix::fs::symlink(m.join("does-not-exist.jpg"), m.join("dangling.jpg")).unwrap();
    std::os::unix::fs::symlink(root, m.join("loop")).unwrap();
    // Accepted oddities: a PNG named .JPEG, a 16-bit grey PNG, an odd file name.
    pattern(20, 20, 1).save_with_format(m.join("png_named.JPEG"), image::ImageFormat::Png).unwrap();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(9, 7, |x, y| image::Luma([(x * y * 900) as u16]))
        .save(m.join("grey16.png"))
        .unwrap();
    write_jpeg(&m.join("sp ace & ünïcode 'q'.jpg"), &pattern(12, 12, 3), 80);
    std::fs::write(m.join("notes.txt"), b"ignored: not an image extension").unwrap();
    std::fs::create_dir_all(root.join("zz_empty_class")).unwrap();
    (
        good + 3,
        vec!["truncated.jpg", "empty.jpg", "text.jpg", "huge.jpg", "header_only.png", "dangling.jpg", "loop"],
    )
}

#[test]
fn hostile_folder_packs_the_good_and_names_the_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (good, bad) = hostile_tree(&src);
    let source = ImageFolder::open(&src).unwrap();
    assert_eq!(source.ignored, 1, "notes.txt is ignored, not rejected");
    assert_eq!(source.empty_classes, vec!["zz_empty_class"]);
    let out = tmp.path().join("out");
    let info = SourceInfo {
        kind: "folder".into(),
        path: src.display().to_string(),
    };
    let opts = PackOptions {
        max_pixels: 50_000_000,
        ..PackOptions::default()
    };
    let r = pack(&source, info.clone(), "train", &out, &opts, &|_| {}).unwrap();
    assert_eq!(r.manifest.num_records as usize, good, "rejects: {:#?}", r.rejects);
    for name in &bad {
        let hit = r.rejects.iter().find(|x| x.input.ends_with(name));
        let hit = hit.unwrap_or_else(|| panic!("{name} not in rejects: {:#?}", r.rejects));
        assert!(!hit.reason.is_empty());
    }
    assert_eq!(r.rejects.len(), bad.len(), "{:#?}", r.rejects);
    let huge = r.rejects.iter().find(|x| x.input.ends_with("huge.jpg")).unwrap();
    assert!(huge.reason.contains("pixel limit"), "{}", huge.reason);
    // rejects.json lists the same, and every packed record decodes.
    let listed: Vec<srmae_datasets::Reject> =
        serde_json::from_slice(&std::fs::read(out.join("rejects.json")).unwrap()).unwrap();
    assert_eq!(listed, r.rejects);
    let ds = PackedDataset::open(&out).unwrap();
    for i in 0..ds.len() {
        ds.decode(i).unwrap();
    }
    assert_eq!(ds.classes().len(), 3, "empty class keeps its index");

    // With a bound below the number of bad files, the pack fails and leaves
    // no manifest behind.
    let out2 = tmp.path().join("bounded");
    let opts2 = PackOptions {
        max_rejects: Some(2),
        ..opts
    };
    let err = pack(&source, info, "train", &out2, &opts2, &|_| {}).unwrap_err();
    assert!(matches!(err, Error::TooManyRejects { .. }), "{err}");
    assert!(!out2.join("manifest.json").exists());
}

#[test]
fn refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_image_folder(&src, &["a"], 2);
    let source = ImageFolder::open(&src).unwrap();
    let info = SourceInfo {
        kind: "folder".into(),
        path: "src".into(),
    };
    let out = tmp.path().join("out");
    pack(&source, info.clone(), "train", &out, &PackOptions::default(), &|_| {}).unwrap();
    let err = pack(&source, info.clone(), "train", &out, &PackOptions::default(), &|_| {}).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    let o = PackOptions {
        overwrite: true,
        encoding: Encoding::Raw,
        ..PackOptions::default()
    };
    pack(&source, info, "train", &out, &o, &|_| {}).unwrap();
    assert_eq!(PackedDataset::open(&out).unwrap().len(), 2);
}

fn packed_raw(tmp: &Path) -> std::path::PathBuf {
    let src = tmp.join("src");
    make_image_folder(&src, &["a", "b"], 3);
    let source = ImageFolder::open(&src).unwrap();
    let info = SourceInfo {
        kind: "folder".into(),
        path: "src".into(),
    };
    let out = tmp.join("out");
    let o = PackOptions {
        encoding: Encoding::Raw,
        ..PackOptions::default()
    };
    pack(&source, info, "train", &out, &o, &|_| {}).unwrap();
    out
}

#[test]
fn flipped_record_byte_is_detected_on_read() {
    let tmp = tempfile::tempdir().unwrap();
    let out = packed_raw(tmp.path());
    let shard = out.join("shard-00000.srs");
    let e = Shard::open(&shard).unwrap().entry(2);
    flip_byte(&shard, e.offset as usize + 3);
    let ds = PackedDataset::open(&out).unwrap();
    let err = ds.decode(2).unwrap_err().to_string();
    assert!(err.contains("record 2") && err.contains("checksum"), "{err}");
    assert!(err.contains("shard-00000.srs"), "{err}");
    ds.decode(1).unwrap();
}

#[test]
fn header_index_and_truncation_damage_is_detected_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let out = packed_raw(tmp.path());
    let shard = out.join("shard-00000.srs");
    let pristine = std::fs::read(&shard).unwrap();
    for (offset, want) in [(20usize, "header checksum"), (64 + 40 + 9, "index checksum")] {
        flip_byte(&shard, offset);
        let err = Shard::open(&shard).err().expect("damage must be detected").to_string();
        assert!(err.contains(want), "offset {offset}: {err}");
        std::fs::write(&shard, &pristine).unwrap();
    }
    std::fs::write(&shard, &pristine[..pristine.len() - 100]).unwrap();
    let err = Shard::open(&shard).err().unwrap().to_string();
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(&shard, &pristine[..10]).unwrap();
    assert!(Shard::open(&shard).is_err());
    std::fs::write(&shard, b"").unwrap();
    assert!(Shard::open(&shard).is_err());
}

/// Colour spaces and bit depths other than 8-bit RGB pack to the pixels one
/// expects (alpha dropped, grey replicated, 16 bits rounded to 8), never to
/// shifted channels or garbage. One image per class, so record i is class i.
#[test]
fn colour_spaces_and_bit_depths_pack_to_the_expected_pixels() {
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (w, h) = (7u32, 5u32);
    let rgb = |x: u32, y: u32| [(x * 30) as u8, (y * 50) as u8, ((x + y) * 20) as u8];
    let grey = |x: u32, y: u32| (x * 31 + y * 7) as u8;
    let grey16 = |x: u32, y: u32| (x * 9000 + y * 1000) as u16;
    // (class, expected RGB of pixel (x, y))
    type Expect = Box<dyn Fn(u32, u32) -> [u8; 3]>;
    let mut cases: Vec<(&str, Expect)> = Vec::new();
    let save = |class: &str, name: &str, f: &dyn Fn(&Path)| {
        let d = src.join(class);
        std::fs::create_dir_all(&d).unwrap();
        f(&d.join(name));
    };
    save("a_rgb8_png", "i.png", &|p| ImageBuffer::from_fn(w, h, |x, y| Rgb(rgb(x, y))).save(p).unwrap());
    cases.push(("a_rgb8_png", Box::new(rgb)));
    save("b_rgba8_png", "i.png", &|p| {
        ImageBuffer::from_fn(w, h, |x, y| {
            let [r, g, b] = rgb(x, y);
            Rgba([r, g, b, (x * 40) as u8])
        })
        .save(p)
        .unwrap()
    });
    cases.push(("b_rgba8_png", Box::new(rgb)));
    save("c_grey_alpha_png", "i.png", &|p| ImageBuffer::from_fn(w, h, |x, y| LumaA([grey(x, y), 7])).save(p).unwrap());
    cases.push(("c_grey_alpha_png", Box::new(move |x, y| [grey(x, y); 3])));
    save("d_grey16_png", "i.png", &|p| ImageBuffer::from_fn(w, h, |x, y| Luma([grey16(x, y)])).save(p).unwrap());
    cases.push(("d_grey16_png", Box::new(move |x, y| [(grey16(x, y) as f32 / 257.0).round() as u8; 3])));
    save("e_rgb16_png", "i.png", &|p| {
        ImageBuffer::from_fn(w, h, |x, y| Rgb(rgb(x, y).map(|v| v as u16 * 257))).save(p).unwrap()
    });
    cases.push(("e_rgb16_png", Box::new(rgb)));
    save("f_bmp", "i.bmp", &|p| ImageBuffer::from_fn(w, h, |x, y| Rgb(rgb(x, y))).save(p).unwrap());
    cases.push(("f_bmp", Box::new(rgb)));
    save("g_tiff", "i.tiff", &|p| ImageBuffer::from_fn(w, h, |x, y| Rgb(rgb(x, y))).save(p).unwrap());
    cases.push(("g_tiff", Box::new(rgb)));
    save("h_webp_lossless", "i.webp", &|p| ImageBuffer::from_fn(w, h, |x, y| Rgb(rgb(x, y))).save(p).unwrap());
    cases.push(("h_webp_lossless", Box::new(rgb)));
    // GIF is not among torchvision's image extensions: ignored, as there,
    // and its class stays (empty) so that class indices match torchvision's.
    save("z_gif", "i.gif", &|p| ImageBuffer::from_fn(w, h, |x, y| Rgba([x as u8, y as u8, 0, 255])).save(p).unwrap());

    let source = ImageFolder::open(&src).unwrap();
    assert_eq!((source.ignored, source.empty_classes.clone()), (1, vec!["z_gif".to_string()]));
    let info = SourceInfo { kind: "folder".into(), path: src.display().to_string() };
    let opts = PackOptions { encoding: Encoding::Raw, ..PackOptions::default() };
    let out = tmp.path().join("out");
    let r = pack(&source, info, "train", &out, &opts, &|_| {}).unwrap();
    assert!(r.rejects.is_empty(), "{:#?}", r.rejects);
    let ds = PackedDataset::open(&out).unwrap();
    assert_eq!(ds.len() as usize, cases.len());
    for (i, (class, expect)) in cases.iter().enumerate() {
        assert_eq!(ds.classes()[i], *class);
        let img = ds.decode(i as u64).unwrap();
        assert_eq!((img.width, img.height), (w, h), "{class}");
        let c = img.channels as usize;
        for y in 0..h {
            for x in 0..w {
                let at = (y * w + x) as usize * c;
                let got: Vec<u8> = if c == 1 { vec![img.pixels[at]; 3] } else { img.pixels[at..at + 3].to_vec() };
                let want = expect(x, y);
                for k in 0..3 {
                    assert!((got[k] as i32 - want[k] as i32).abs() <= 1, "{class} ({x},{y}): got {got:?}, want {want:?}");
                }
            }
        }
    }
}

/// A CMYK JPEG (Adobe, inverted, as Photoshop and PIL write it) and a
/// greyscale JPEG pack to their colours; JPEG encoding keeps grey as grey
/// bytes and re-encodes CMYK (`tests/fixtures`, made with PIL: left half
/// RGB (220, 30, 30), right half (30, 30, 220)).
#[test]
fn cmyk_and_grey_jpegs_pack_to_their_colours() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for (class, file) in [("a_cmyk", "cmyk.jpg"), ("b_grey", "grey.jpg")] {
        std::fs::create_dir_all(src.join(class)).unwrap();
        std::fs::copy(fixtures.join(file), src.join(class).join(file)).unwrap();
    }
    let source = ImageFolder::open(&src).unwrap();
    let info = SourceInfo { kind: "folder".into(), path: src.display().to_string() };
    for encoding in [Encoding::Jpeg, Encoding::Raw] {
        let out = tmp.path().join(format!("out-{encoding:?}"));
        let r = pack(&source, info.clone(), "train", &out, &PackOptions { encoding, ..PackOptions::default() }, &|_| {}).unwrap();
        assert!(r.rejects.is_empty(), "{:#?}", r.rejects);
        let ds = PackedDataset::open(&out).unwrap();
        let rgb_at = |i: u64, x: usize, y: usize| -> [i32; 3] {
            let img = ds.decode(i).unwrap();
            let c = img.channels as usize;
            let at = (y * img.width as usize + x) * c;
            if c == 1 { [img.pixels[at] as i32; 3] } else { [0, 1, 2].map(|k| img.pixels[at + k] as i32) }
        };
        let close = |got: [i32; 3], want: [i32; 3]| got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 16);
        let (left, right) = (rgb_at(0, 2, 4), rgb_at(0, 13, 4));
        assert!(close(left, [220, 30, 30]) && close(right, [30, 30, 220]), "{encoding:?} CMYK: {left:?} {right:?}");
        // Grey: BT.601 luma of the two colours.
        let (gl, gr) = (rgb_at(1, 2, 4), rgb_at(1, 13, 4));
        assert!(close(gl, [86; 3]) && close(gr, [46; 3]), "{encoding:?} grey: {gl:?} {gr:?}");
    }
}
