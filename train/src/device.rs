//! `--device cpu|cuda[:N]`.

use anyhow::{bail, Result};
use srmae_model::candle::Device;

/// Parses a device name; CUDA needs a build with `--features cuda`.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => bail!("device {name:?}: expected cpu, cuda or cuda:N"),
        },
        None => bail!("device {name:?}: expected cpu, cuda or cuda:N"),
    };
    if !srmae_model::candle::utils::cuda_is_available() {
        bail!("device {name:?}: this srmae was built without CUDA support (rebuild with `cargo build --release --features cuda`)");
    }
    let dev = Device::new_cuda(ordinal).map_err(|e| anyhow::anyhow!("device {name:?}: cannot open the GPU: {e}"))?;
    let tuning = srmae_model::training::cuda_setup::tune_device(&dev).map_err(|e| anyhow::anyhow!("device {name:?}: CUDA settings: {e}"))?;
    tracing::debug!("device {name}: {tuning:?}");
    Ok(dev)
}

/// The device of one data-parallel rank: plain `cuda` means GPU
/// `local_rank` (one process per GPU of each machine); anything else is
/// taken as given.
pub fn parse_device_for_rank(name: &str, dist: &srmae_model::training::dist::DistEnv) -> Result<Device> {
    if dist.world_size > 1 && name.trim().eq_ignore_ascii_case("cuda") {
        return parse_device(&format!("cuda:{}", dist.local_rank));
    }
    parse_device(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        assert!(parse_device("tpu").unwrap_err().to_string().contains("expected cpu"));
        assert!(parse_device("cuda:x").is_err());
        if !srmae_model::candle::utils::cuda_is_available() {
            assert!(parse_device("cuda:0").unwrap_err().to_string().contains("without CUDA"));
        }
    }
}
