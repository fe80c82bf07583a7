//! AdamW with parameter groups (candle's AdamW applies one weight decay to
//! every variable): no weight decay on 1-D parameters (biases, norm weights)
//! and on tokens / position embeddings, optional layer-wise lr decay for
//! fine-tuning (BEiT/MAE `param_groups_lrd`), global-norm gradient clipping.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

use crate::ops::adamw::{adamw_steps, AdamWItem, AdamWStep};

/// Variables sharing a weight decay and an lr multiplier.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub names: Vec<String>,
    pub vars: Vec<Var>,
    pub weight_decay: f64,
    pub lr_scale: f64,
}

/// Names that never get weight decay (besides every 1-D parameter).
const NO_DECAY: [&str; 5] = ["cls_token", "pos_embed", "mask_token", "lowres_type", "dist_token"];

/// MAE's layer id: embeddings 0, `blocks.i` i + 1, everything else (head,
/// final norms) `num_layers + 1`.
pub fn layer_id(name: &str, num_layers: usize) -> usize {
    if name.starts_with("cls_token") || name.starts_with("pos_embed") || name.starts_with("patch_embed") {
        0
    } else if let Some(rest) = name.strip_prefix("blocks.") {
        rest.split('.').next().and_then(|i| i.parse::<usize>().ok()).map_or(num_layers + 1, |i| i + 1)
    } else {
        num_layers + 1
    }
}

/// Groups the variables of `varmap`. `layer_decay`: `(decay, num_layers)`.
pub fn param_groups(varmap: &VarMap, weight_decay: f64, layer_decay: Option<(f64, usize)>) -> Vec<ParamGroup> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut groups: Vec<ParamGroup> = Vec::new();
    for name in names {
        let var = &data[name];
        let no_decay = var.as_tensor().rank() <= 1 || NO_DECAY.iter().any(|n| name.ends_with(n));
        let wd = if no_decay { 0.0 } else { weight_decay };
        let scale = layer_decay.map_or(1.0, |(d, n)| d.powi((n + 1 - layer_id(name, n)) as i32));
        match groups.iter_mut().find(|g| g.weight_decay == wd && g.lr_scale == scale) {
            Some(g) => {
                g.names.push(name.clone());
                g.vars.push(var.clone());
            }
            None => groups.push(ParamGroup {
                names: vec![name.clone()],
                vars: vec![var.clone()],
                weight_decay: wd,
                lr_scale: scale,
            }),
        }
    }
    groups
}

/// AdamW (decoupled weight decay, as torch.optim.AdamW) over groups.
pub struct AdamW {
    pub groups: Vec<ParamGroup>,
    /// First and second moments, per group, per variable.
    pub moments: Vec<Vec<(Tensor, Tensor)>>,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: u64,
}

impl AdamW {
    /// MAE's betas (0.9, 0.95).
    pub fn new(groups: Vec<ParamGroup>, lr: f64) -> Result<AdamW> {
        let moments = groups
            .iter()
            .map(|g| g.vars.iter().map(|v| Ok((v.zeros_like()?, v.zeros_like()?))).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { groups, moments, lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: 0 })
    }

    /// Global L2 norm of the gradients of all grouped variables, in one
    /// pass on the CPU (`ops::grad_norm`).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        crate::ops::grad_norm::global_norm(self.groups.iter().flat_map(|g| &g.vars).filter_map(|v| grads.get(v.as_tensor())))
    }

    /// One update. Gradients are multiplied by `grad_scale` first (for
    /// clipping: `min(1, max_norm / norm)`, or 1/accumulation steps). On the
    /// CPU the variables and moments are updated in place (`ops::adamw`).
    pub fn step(&mut self, grads: &GradStore, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let mut items = Vec::new();
        for (g, moments) in self.groups.iter().zip(self.moments.iter_mut()) {
            let settings = AdamWStep {
                lr: self.lr * g.lr_scale,
                weight_decay: g.weight_decay,
                beta1: b1,
                beta2: b2,
                eps: self.eps,
                bias_correction1: 1.0 - b1.powi(t),
                bias_correction2: 1.0 - b2.powi(t),
                grad_scale,
            };
            for (var, (m, v)) in g.vars.iter().zip(moments.iter_mut()) {
                let Some(grad) = grads.get(var.as_tensor()) else { continue };
                items.push(AdamWItem { var, grad, m, v, step: settings });
            }
        }
        adamw_steps(&mut items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_follow_mae() {
        assert_eq!(layer_id("cls_token", 12), 0);
        assert_eq!(layer_id("patch_embed.proj.weight", 12), 0);
        assert_eq!(layer_id("blocks.0.attn.qkv.weight", 12), 1);
        assert_eq!(layer_id("blocks.11.mlp.fc2.bias", 12), 12);
        assert_eq!(layer_id("head.weight", 12), 13);
    }
}
