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
    Device::new_cuda(ordinal).map_err(|e| anyhow::anyhow!("device {name:?}: cannot open the GPU: {e}"))
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
