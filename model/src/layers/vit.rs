//! Vision Transformer pieces, as timm's `VisionTransformer` used by MAE:
//! linear patch embedding (equivalent to the 16×16 stride-16 conv), pre-norm
//! blocks with qkv bias, MLP ratio 4, exact GELU, LayerNorm eps 1e-6, and
//! stochastic depth.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::linear::Linear;
use serde::{Deserialize, Serialize};

use crate::layers::norm::LayerNorm;

/// Encoder size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Input side; 0 (absent in a recipe): the recipe's `data.size`.
    #[serde(default)]
    pub img_size: usize,
    pub patch: usize,
    /// Input channels; 0 (absent in a recipe): the recipe's `data.channels`.
    #[serde(default)]
    pub in_chans: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    /// Stochastic depth rate of the last block (linearly 0 -> rate).
    pub drop_path: f64,
}

impl VitConfig {
    fn preset(dim: usize, depth: usize, heads: usize) -> VitConfig {
        VitConfig {
            img_size: 224,
            patch: 16,
            in_chans: 3,
            dim,
            depth,
            heads,
            mlp_ratio: 4.0,
            drop_path: 0.0,
        }
    }
    /// ViT-Ti/16 at 224.
    pub fn tiny_16() -> VitConfig {
        VitConfig::preset(192, 12, 3)
    }
    /// ViT-S/16 at 224.
    pub fn small_16() -> VitConfig {
        VitConfig::preset(384, 12, 6)
    }
    /// ViT-B/16 at 224.
    pub fn base_16() -> VitConfig {
        VitConfig::preset(768, 12, 12)
    }
    /// ViT-L/16 at 224.
    pub fn large_16() -> VitConfig {
        VitConfig::preset(1024, 24, 16)
    }
    /// A CPU-sized encoder for 28×28 grey images (Fashion-MNIST), patch 4.
    pub fn fmnist_tiny() -> VitConfig {
        VitConfig {
            img_size: 28,
            patch: 4,
            in_chans: 1,
            dim: 128,
            depth: 6,
            heads: 4,
            mlp_ratio: 4.0,
            drop_path: 0.0,
        }
    }
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch
    }
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Values per patch (`p * p * C`).
    pub fn patch_dim(&self) -> usize {
        self.patch * self.patch * self.in_chans
    }
}

/// timm-style `trunc_normal_(std=0.02)` approximated by a normal of std 0.02
/// and xavier-uniform for linear weights, as MAE's `_init_weights`.
pub fn linear_xavier(inp: usize, out: usize, vb: VarBuilder) -> Result<Linear> {
    let bound = (6.0 / (inp + out) as f64).sqrt();
    let w = vb.get_with_hints((out, inp), "weight", candle_nn::Init::Uniform { lo: -bound, up: bound })?;
    let b = vb.get_with_hints(out, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// Multi-head self-attention with qkv bias: qkv projection, the fused
/// `ops::attention` (heads split inside), output projection.
#[derive(Clone, Debug)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, vb: VarBuilder) -> Result<Attention> {
        Ok(Attention {
            qkv: linear_xavier(dim, 3 * dim, vb.pp("qkv"))?,
            proj: linear_xavier(dim, dim, vb.pp("proj"))?,
            heads,
        })
    }
}

impl Module for Attention {
    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = crate::ops::attention(&self.qkv.forward(x)?, self.heads)?;
        self.proj.forward(&out)
    }
}

/// Two linear layers with exact (erf) GELU between.
#[derive(Clone, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Mlp> {
        Ok(Mlp {
            fc1: linear_xavier(dim, hidden, vb.pp("fc1"))?,
            fc2: linear_xavier(hidden, dim, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&crate::ops::linear_gelu(x, self.fc1.weight(), self.fc1.bias())?)
    }
}

thread_local! {
    static DROP_PATH_RNG: std::cell::RefCell<rand_chacha::ChaCha8Rng> =
        std::cell::RefCell::new(<rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(0));
}

/// Seeds this thread's stochastic-depth draws (the trainer calls it with a
/// hash of (seed, step) before each forward, so a resumed run draws the
/// same masks as the uninterrupted one; candle's CPU RNG cannot be seeded).
pub fn seed_stochastic_depth(seed: u64) {
    DROP_PATH_RNG.with(|r| *r.borrow_mut() = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(seed));
}

/// Stochastic depth's per-sample scales for a batch of `b`: 0 for a dropped
/// sample (probability `p`), 1/(1-p) for a kept one; draws from this
/// thread's stream (`seed_stochastic_depth`).
pub fn drop_path_scales(b: usize, p: f64) -> Vec<f32> {
    let kept = (1.0 / (1.0 - p)) as f32;
    DROP_PATH_RNG.with(|r| {
        let mut r = r.borrow_mut();
        (0..b)
            .map(|_| {
                let u = (rand_core::RngCore::next_u32(&mut *r) >> 8) as f32 / (1u32 << 24) as f32;
                if u >= p as f32 {
                    kept
                } else {
                    0.0
                }
            })
            .collect()
    })
}

/// Stochastic depth: during training, drops the residual branch of a whole
/// sample with probability `p` and scales kept ones by 1/(1-p).
pub fn drop_path(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if !train || p == 0.0 {
        return Ok(x.clone());
    }
    let b = x.dim(0)?;
    let keep = Tensor::from_vec(drop_path_scales(b, p), (b, 1, 1), x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&keep)
}

/// Pre-norm transformer block.
#[derive(Clone, Debug)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: f64,
}

impl Block {
    pub fn new(dim: usize, heads: usize, mlp_ratio: f64, drop_path: f64, vb: VarBuilder) -> Result<Block> {
        Ok(Block {
            norm1: LayerNorm::new(dim, 1e-6, vb.pp("norm1"))?,
            attn: Attention::new(dim, heads, vb.pp("attn"))?,
            norm2: LayerNorm::new(dim, 1e-6, vb.pp("norm2"))?,
            mlp: Mlp::new(dim, (dim as f64 * mlp_ratio) as usize, vb.pp("mlp"))?,
            drop_path,
        })
    }

    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]`
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(params) = self.fused_params() {
            if crate::ops::block::fused(x, &params) {
                let scales = if train && self.drop_path > 0.0 {
                    let b = x.dim(0)?;
                    // The attention branch's draws first, as the per-op path below.
                    let attn = drop_path_scales(b, self.drop_path);
                    Some(crate::ops::block::DropPathScales { attn, mlp: drop_path_scales(b, self.drop_path) })
                } else {
                    None
                };
                return crate::ops::block::transformer_block(x, &params, self.attn.heads, [self.norm1.eps(), self.norm2.eps()], scales);
            }
        }
        let x = (x + drop_path(&self.attn.forward(&self.norm1.forward(x)?)?, self.drop_path, train)?)?;
        &x + drop_path(&self.mlp.forward(&self.norm2.forward(&x)?)?, self.drop_path, train)?
    }

    /// The parameters as `ops::block` takes them (every linear has a bias).
    fn fused_params(&self) -> Option<crate::ops::block::BlockParams<'_>> {
        fn pair(l: &Linear) -> Option<(&Tensor, &Tensor)> {
            l.bias().map(|b| (l.weight(), b))
        }
        Some(crate::ops::block::BlockParams {
            norm1: (self.norm1.weight(), self.norm1.bias()),
            qkv: pair(&self.attn.qkv)?,
            proj: pair(&self.attn.proj)?,
            norm2: (self.norm2.weight(), self.norm2.bias()),
            fc1: pair(&self.mlp.fc1)?,
            fc2: pair(&self.mlp.fc2)?,
        })
    }
}

/// A stack of blocks with linearly increasing drop-path rates, then a norm.
#[derive(Clone, Debug)]
pub struct Blocks {
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
}

impl Blocks {
    pub fn new(dim: usize, depth: usize, heads: usize, mlp_ratio: f64, drop_path: f64, vb: VarBuilder) -> Result<Blocks> {
        let blocks = (0..depth)
            .map(|i| {
                let dp = if depth > 1 { drop_path * i as f64 / (depth - 1) as f64 } else { drop_path };
                Block::new(dim, heads, mlp_ratio, dp, vb.pp(format!("blocks.{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Blocks {
            blocks,
            norm: LayerNorm::new(dim, 1e-6, vb.pp("norm"))?,
        })
    }

    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]` (normalised)
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.norm.forward(&self.forward_unnormed(x, train)?)
    }

    /// The blocks without the final norm (MAE's global-pool fine-tuning
    /// normalises the pooled features with `fc_norm` instead).
    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]`
    pub fn forward_unnormed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.blocks {
            x = b.forward(&x, train)?;
        }
        Ok(x)
    }
}

/// The encoder: patch embedding, frozen sin-cos position embedding, cls
/// token, blocks, final norm.
#[derive(Clone, Debug)]
pub struct VitEncoder {
    pub cfg: VitConfig,
    pub patch_embed: Linear,
    pub cls_token: Tensor,
    /// `[1, 1 + L, D]`, frozen (not a variable).
    pub pos_embed: Tensor,
    pub blocks: Blocks,
}

impl VitEncoder {
    pub fn new(cfg: &VitConfig, vb: VarBuilder) -> Result<VitEncoder> {
        let d = cfg.dim;
        Ok(VitEncoder {
            cfg: cfg.clone(),
            patch_embed: linear_xavier(cfg.patch_dim(), d, vb.pp("patch_embed.proj"))?,
            cls_token: vb.get_with_hints((1, 1, d), "cls_token", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?,
            pos_embed: crate::layers::pos_embed::sincos_2d_tensor(d, cfg.grid(), true, vb.device())?,
            blocks: Blocks::new(d, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.drop_path, vb.clone())?,
        })
    }

    /// Patch tokens with position embedding.
    /// # Shapes
    /// - `patches`: `[B, L, p*p*C]` (normalised pixels) -> `[B, L, D]`
    pub fn embed(&self, patches: &Tensor) -> Result<Tensor> {
        let l = patches.dim(1)?;
        crate::ops::row_broadcast::add_rows(&self.patch_embed.forward(patches)?, &self.pos_embed.narrow(1, 1, l)?)
    }

    /// Prepends the cls token (with its position embedding) and runs the blocks.
    /// # Shapes
    /// - `tokens`: `[B, N, D]` -> `[B, 1 + N, D]`
    pub fn run(&self, tokens: &Tensor, train: bool) -> Result<Tensor> {
        self.blocks.forward(&self.with_cls(tokens)?, train)
    }

    /// # Shapes
    /// - `tokens`: `[B, N, D]` -> `[B, 1 + N, D]`
    pub fn with_cls(&self, tokens: &Tensor) -> Result<Tensor> {
        let b = tokens.dim(0)?;
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1)?)?.broadcast_as((b, 1, self.cfg.dim))?;
        Tensor::cat(&[&cls, tokens], 1)
    }

    /// The full image (all patches), e.g. for fine-tuning and evaluation.
    /// # Shapes
    /// - `patches`: `[B, L, p*p*C]` -> `[B, 1 + L, D]`
    pub fn forward_all(&self, patches: &Tensor, train: bool) -> Result<Tensor> {
        self.run(&self.embed(patches)?, train)
    }
}

/// Gathers tokens by index.
/// # Shapes
/// - `x`: `[B, L, D]`, `ids`: `[B, K]` u32 -> `[B, K, D]`
pub fn gather_tokens(x: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, k) = ids.dims2()?;
    let d = x.dim(2)?;
    let idx = ids.unsqueeze(2)?.broadcast_as((b, k, d))?.contiguous()?;
    x.contiguous()?.gather(&idx, 1)
}
