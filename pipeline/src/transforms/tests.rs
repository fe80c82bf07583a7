//! Invariants of the patch transforms.

use super::*;
use crate::rng::{Purpose, SampleRng};

struct Out {
    visible: Vec<u32>,
    clue_ids: Vec<u32>,
    clue_pixels: Vec<u8>,
    hidden: Vec<u32>,
    restore: Vec<u32>,
    mask: Vec<u8>,
}

fn run(t: &dyn PatchTransform, image: &[u8], index: u64) -> Out {
    let lay = t.layout();
    let l = lay.num_patches();
    let mut o = Out {
        visible: vec![0; lay.n_visible],
        clue_ids: vec![0; lay.n_clue],
        clue_pixels: vec![0; lay.clue_pixels()],
        hidden: vec![0; lay.n_hidden],
        restore: vec![0; if lay.restore { l } else { 0 }],
        mask: vec![9; l],
    };
    let mut rng = SampleRng::new(1, 0, index, Purpose::Mask);
    t.apply(
        image,
        &mut rng,
        PatchOut {
            visible: &mut o.visible,
            clue_ids: &mut o.clue_ids,
            clue_pixels: &mut o.clue_pixels,
            hidden: &mut o.hidden,
            restore: &mut o.restore,
            mask: &mut o.mask,
        },
    );
    o
}

fn noise_image(side: usize, c: usize, seed: u64) -> Vec<u8> {
    let mut r = SampleRng::new(seed, 0, 0, Purpose::Augment);
    (0..side * side * c).map(|_| r.next_u64() as u8).collect()
}

#[test]
fn srmae_partitions_patches_and_restore_inverts_the_shuffle() {
    let t = PatchConfig::srmae(16).build(224, 3).unwrap().unwrap();
    let lay = t.layout();
    assert_eq!((lay.num_patches(), lay.n_visible, lay.n_clue, lay.n_hidden, lay.clue_side), (196, 49, 147, 0, 4));
    let img = noise_image(224, 3, 0);
    for idx in 0..20 {
        let o = run(t.as_ref(), &img, idx);
        let mut all: Vec<u32> = o.visible.iter().chain(&o.clue_ids).chain(&o.hidden).copied().collect();
        all.sort();
        assert_eq!(all, (0..196).collect::<Vec<_>>(), "disjoint and complete");
        // ids_shuffle = visible ++ clue ++ hidden; restore[ids_shuffle[j]] = j
        for (j, &id) in o.visible.iter().chain(&o.clue_ids).chain(&o.hidden).enumerate() {
            assert_eq!(o.restore[id as usize] as usize, j);
        }
        for &v in &o.visible {
            assert_eq!(o.mask[v as usize], mask_value::VISIBLE);
        }
        for &v in &o.clue_ids {
            assert_eq!(o.mask[v as usize], mask_value::CLUE);
        }
    }
}

#[test]
fn clue_pixels_equal_a_reference_box_filter() {
    for (factor, filter_side) in [(2usize, 8usize), (4, 4), (8, 2)] {
        let cfg = PatchConfig::SrmaeClues {
            patch: 16,
            select_ratio: 0.75,
            clue_fraction: 0.5,
            factor,
            filter: ClueFilter::Area,
        };
        let t = cfg.build(64, 3).unwrap().unwrap();
        let lay = t.layout();
        assert_eq!(lay.clue_side, filter_side);
        assert_eq!(lay.n_clue + lay.n_hidden, 12);
        assert_eq!(lay.n_clue, 6);
        let img = noise_image(64, 3, factor as u64);
        let o = run(t.as_ref(), &img, 3);
        let r = lay.clue_side;
        for (k, &id) in o.clue_ids.iter().enumerate() {
            let (py, px) = (id as usize / 4 * 16, id as usize % 4 * 16);
            for c in 0..3 {
                for oy in 0..r {
                    for ox in 0..r {
                        let mut sum = 0.0f64;
                        for dy in 0..factor {
                            for dx in 0..factor {
                                sum += img[c * 64 * 64 + (py + oy * factor + dy) * 64 + px + ox * factor + dx] as f64;
                            }
                        }
                        let want = (sum / (factor * factor) as f64 + 0.5).floor() as u8;
                        let got = o.clue_pixels[((k * 3 + c) * r + oy) * r + ox];
                        assert_eq!(got, want, "factor {factor} clue {k} c {c} ({oy},{ox})");
                    }
                }
            }
        }
    }
}

#[test]
fn srmae_without_clues_is_exactly_mae() {
    let srmae = PatchConfig::SrmaeClues {
        patch: 4,
        select_ratio: 0.75,
        clue_fraction: 0.0,
        factor: 4,
        filter: ClueFilter::Area,
    }
    .build(28, 1)
    .unwrap()
    .unwrap();
    let mae = PatchConfig::MaeRandom { patch: 4, mask_ratio: 0.75 }.build(28, 1).unwrap().unwrap();
    assert_eq!(srmae.layout().n_clue, 0);
    let img = noise_image(28, 1, 0);
    for idx in 0..10 {
        let (a, b) = (run(srmae.as_ref(), &img, idx), run(mae.as_ref(), &img, idx));
        assert_eq!((a.visible, a.hidden, a.restore, a.mask), (b.visible, b.hidden, b.restore, b.mask));
    }
}

#[test]
fn bicubic_clues_are_close_to_area_clues_on_smooth_images() {
    let mk = |filter| {
        PatchConfig::SrmaeClues { patch: 16, select_ratio: 0.75, clue_fraction: 1.0, factor: 4, filter }
            .build(32, 1)
            .unwrap()
            .unwrap()
    };
    let img: Vec<u8> = (0..32 * 32).map(|i| ((i % 32) * 4 + (i / 32) * 2) as u8).collect();
    let (a, b) = (run(mk(ClueFilter::Area).as_ref(), &img, 0), run(mk(ClueFilter::Bicubic).as_ref(), &img, 0));
    assert_eq!(a.clue_ids, b.clue_ids);
    for (x, y) in a.clue_pixels.iter().zip(&b.clue_pixels) {
        assert!((*x as i32 - *y as i32).abs() <= 4, "{x} vs {y}");
    }
}

#[test]
fn simmim_masks_whole_mask_patches() {
    let t = PatchConfig::SimMimBlocks { mask_patch: 32, model_patch: 4, mask_ratio: 0.6 }.build(192, 3).unwrap().unwrap();
    let lay = t.layout();
    assert_eq!(lay.grid_w, 48);
    let o = run(t.as_ref(), &[], 0);
    let masked = o.mask.iter().filter(|&&m| m == mask_value::HIDDEN).count();
    // ceil(36 * 0.6) = 22 mask patches of 8x8 model patches
    assert_eq!(masked, 22 * 64);
    for by in 0..6 {
        for bx in 0..6 {
            let first = o.mask[by * 8 * 48 + bx * 8];
            for y in 0..8 {
                for x in 0..8 {
                    assert_eq!(o.mask[(by * 8 + y) * 48 + bx * 8 + x], first);
                }
            }
        }
    }
}

#[test]
fn beit_masks_about_the_requested_count() {
    let t = PatchConfig::BeitBlockwise { patch: 16, num_masking_patches: 75, min_num_patches: 16, min_aspect: 0.3 }
        .build(224, 3)
        .unwrap()
        .unwrap();
    let mut total = 0;
    for idx in 0..50 {
        let o = run(t.as_ref(), &[], idx);
        let masked = o.mask.iter().filter(|&&m| m == mask_value::HIDDEN).count();
        assert!(masked <= 75, "never more than requested: {masked}");
        total += masked;
    }
    assert!(total as f64 / 50.0 > 65.0, "mean masked {}", total as f64 / 50.0);
}

#[test]
fn bad_configs_are_refused() {
    assert!(PatchConfig::srmae(16).build(100, 3).is_err());
    assert!(PatchConfig::SrmaeClues { patch: 16, select_ratio: 0.75, clue_fraction: 1.0, factor: 3, filter: ClueFilter::Area }
        .build(224, 3)
        .is_err());
    assert!(PatchConfig::MaeRandom { patch: 16, mask_ratio: 1.0 }.build(224, 3).is_err());
    assert!(PatchConfig::None.build(224, 3).unwrap().is_none());
}
