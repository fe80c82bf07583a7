//! SimMIM's `MaskGenerator`: the image is cut into `mask_patch` squares; a
//! random `ceil(count * mask_ratio)` of them are masked, and the mask is
//! expanded to the model's `model_patch` grid.

use super::{mask_value, PatchLayout, PatchOut, PatchTransform};
use crate::rng::SampleRng;

pub struct SimMimBlocks {
    layout: PatchLayout,
    rand_size: usize,
    scale: usize,
    mask_count: usize,
}

impl SimMimBlocks {
    pub fn new(image_size: usize, mask_patch: usize, model_patch: usize, channels: usize, mask_ratio: f64) -> SimMimBlocks {
        let rand_size = image_size / mask_patch;
        let scale = mask_patch / model_patch;
        let tokens = rand_size * rand_size;
        let grid = rand_size * scale;
        SimMimBlocks {
            layout: PatchLayout {
                patch: model_patch,
                grid_h: grid,
                grid_w: grid,
                channels,
                ..Default::default()
            },
            rand_size,
            scale,
            mask_count: (tokens as f64 * mask_ratio).ceil() as usize,
        }
    }
}

impl PatchTransform for SimMimBlocks {
    fn name(&self) -> &'static str {
        "simmim_blocks"
    }
    fn layout(&self) -> PatchLayout {
        self.layout
    }
    fn apply(&self, _image: &[u8], rng: &mut SampleRng, out: PatchOut<'_>) {
        let tokens = self.rand_size * self.rand_size;
        // np.random.permutation(tokens)[:mask_count]
        let mut perm: Vec<usize> = (0..tokens).collect();
        for i in (1..tokens).rev() {
            let j = rng.int_in(0, i as i64) as usize;
            perm.swap(i, j);
        }
        out.mask.fill(mask_value::VISIBLE);
        let grid = self.layout.grid_w;
        for &t in &perm[..self.mask_count] {
            let (ty, tx) = (t / self.rand_size, t % self.rand_size);
            for y in ty * self.scale..(ty + 1) * self.scale {
                for x in tx * self.scale..(tx + 1) * self.scale {
                    out.mask[y * grid + x] = mask_value::HIDDEN;
                }
            }
        }
    }
}
