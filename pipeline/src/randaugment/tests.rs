//! Each op against PIL/timm on fixed images
//! (`pipeline/reference/randaugment_ops.py` wrote `randaugment_ops.txt`).
//! Every op, blends and bicubic resampling included, reproduces PIL's values
//! exactly on these inputs.

use super::*;
use crate::rng::Purpose;

const REFERENCE: &str = include_str!("../../reference/randaugment_ops.txt");
const FILL: [u8; 3] = [124, 116, 104];

/// (op name, argument) -> HWC values.
fn reference() -> Vec<(String, f64, Vec<u8>)> {
    REFERENCE
        .lines()
        .map(|l| {
            let (head, values) = l.split_once(':').expect("name arg: values");
            let (name, arg) = head.split_once(' ').expect("name arg");
            (name.to_string(), arg.parse().expect("arg"), values.split_whitespace().map(|v| v.parse().expect("u8")).collect())
        })
        .collect()
}

fn hwc_to_chw(v: &[u8], n: usize) -> Vec<u8> {
    (0..3).flat_map(|c| (0..n * n).map(move |i| v[i * 3 + c])).collect()
}

fn run(name: &str, arg: f64, img: &mut [u8], n: usize) {
    let plane = n * n;
    match name {
        "auto_contrast" => point::auto_contrast(img, plane),
        "equalize" => point::equalize(img, plane),
        "invert" => point::invert(img),
        "posterize" => point::posterize(img, arg as u32),
        "solarize" => point::solarize(img, arg as u32),
        "solarize_add" => point::solarize_add(img, arg as u32, 128),
        "color" => enhance::color(img, 3, plane, arg as f32),
        "contrast" => enhance::contrast(img, 3, plane, arg as f32),
        "brightness" => enhance::brightness(img, arg as f32),
        "sharpness" => enhance::sharpness(img, 3, n, n, arg as f32),
        "rotate" => affine::transform(img, 3, n, n, &affine::rotation(arg, n, n), &FILL),
        "shear_x" => affine::transform(img, 3, n, n, &affine::shear_x(arg), &FILL),
        "shear_y" => affine::transform(img, 3, n, n, &affine::shear_y(arg), &FILL),
        "translate_x_rel" => affine::transform(img, 3, n, n, &affine::translate_x(arg * n as f64), &FILL),
        "translate_y_rel" => affine::transform(img, 3, n, n, &affine::translate_y(arg * n as f64), &FILL),
        other => panic!("unknown op {other}"),
    }
}

#[test]
fn every_op_matches_pil() {
    let refs = reference();
    let input = |name: &str| refs.iter().find(|r| r.0 == name).map(|r| r.2.clone()).expect("input");
    let (small, big) = (input("input"), input("input24"));
    let mut checked = 0;
    for (name, arg, want) in refs.iter().filter(|r| !r.0.starts_with("input")) {
        let (src, n) = if name == "equalize" { (&big, 24) } else { (&small, 8) };
        let mut img = hwc_to_chw(src, n);
        run(name, *arg, &mut img, n);
        let want = hwc_to_chw(want, n);
        let worst = img.iter().zip(&want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
        let off = img.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(worst, 0, "{name} {arg}: off by up to {worst} ({off} of {} values)\n got {img:?}\nwant {want:?}", img.len());
        checked += 1;
    }
    assert!(checked >= 40, "{checked} reference outputs");
    // The equalize case must actually change the image.
    assert_ne!(refs.iter().find(|r| r.0 == "equalize").unwrap().2, big);
}

#[test]
fn the_config_string_parses_as_timm_reads_it() {
    let ra = RandAugment::parse("rand-m9-mstd0.5-inc1", &[0.485, 0.456, 0.406]).unwrap();
    assert_eq!(ra, RandAugment { magnitude: 9.0, magnitude_std: 0.5, layers: 2, prob: 0.5, fill: vec![124, 116, 104] });
    assert!(RandAugment::parse("rand-m9-mstd0.5", &[0.5]).unwrap_err().contains("inc1"));
    assert!(RandAugment::parse("augmix-m5", &[0.5]).is_err());
    assert!(RandAugment::parse("rand-m9-x3-inc1", &[0.5]).unwrap_err().contains("not supported"));
}

#[test]
fn ops_are_drawn_uniformly_with_half_probability_and_deterministic() {
    let ra = RandAugment::parse("rand-m9-mstd0.5-inc1", &[0.5, 0.5, 0.5]).unwrap();
    let mut counts = std::collections::HashMap::new();
    let n = 3000;
    let mut applied = 0;
    for i in 0..n {
        let mut img: Vec<u8> = (0..3 * 64).map(|k| (k * 7 % 256) as u8).collect();
        let ops = ra.apply(&mut img, 3, 8, &mut SampleRng::new(5, 0, i, Purpose::RandAugment));
        let mut again: Vec<u8> = (0..3 * 64).map(|k| (k * 7 % 256) as u8).collect();
        assert_eq!(ra.apply(&mut again, 3, 8, &mut SampleRng::new(5, 0, i, Purpose::RandAugment)), ops);
        assert_eq!(img, again);
        applied += ops.len();
        for (op, _) in ops {
            *counts.entry(format!("{op:?}")).or_insert(0usize) += 1;
        }
    }
    // 2 layers x 0.5: one op per image on average; each of the 15 about 1/15 of them.
    let mean = applied as f64 / n as f64;
    assert!((0.9..1.1).contains(&mean), "{mean} ops per image");
    assert_eq!(counts.len(), 15, "{counts:?}");
    assert!(counts.values().all(|&c| (c as f64 - applied as f64 / 15.0).abs() < 0.35 * applied as f64 / 15.0), "{counts:?}");
}
