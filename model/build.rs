//! With feature `cuda`: compiles `kernels/*.cu` (the fused ops' CUDA kernels)
//! to PTX with nvcc through cudaforge, into `OUT_DIR/ptx.rs` (one `&str`
//! constant per file, embedded in the binary; no GPU needed to build).
//!
//! Links OpenBLAS for the fused CPU ops (feature `openblas`; the `srmae`
//! binary's default, off for this crate alone and for the Python wheel):
//! the static, thread-safe (pthread) build, so the binary needs no BLAS at run
//! time; it is set to one thread per call, and rayon splits the products. `SRMAE_OPENBLAS_DIR` names the folder
//! holding `libopenblas.a` (default: Debian's libopenblas-pthread-dev).

use std::path::PathBuf;

fn main() {
    #[cfg(feature = "cuda")]
    build_ptx();
    println!("cargo:rerun-if-env-changed=SRMAE_OPENBLAS_DIR");
    if std::env::var_os("CARGO_FEATURE_OPENBLAS").is_none() {
        return;
    }
    let dir = std::env::var_os("SRMAE_OPENBLAS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/openblas-pthread"));
    if !dir.join("libopenblas.a").is_file() {
        panic!(
            "srmae-model: {} not found. Install OpenBLAS's static library \
             (`scripts/setup.sh` does: apt-get install libopenblas-pthread-dev), set SRMAE_OPENBLAS_DIR \
             to a folder holding libopenblas.a, or build without the `openblas` feature \
             (the gemm crate then runs the products).",
            dir.join("libopenblas.a").display()
        );
    }
    println!("cargo:rerun-if-changed={}", dir.join("libopenblas.a").display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=openblas");
    // OpenBLAS's own dependencies (libopenblas.a carries its Fortran-free parts).
    println!("cargo:rustc-link-lib=dylib=m");
    println!("cargo:rustc-link-lib=dylib=pthread");
}

/// nvcc: `kernels/*.cu` -> PTX for the compute capability in
/// `CUDA_COMPUTE_CAP` (scripts/cuda/setup-cuda-build.sh sets 90).
#[cfg(feature = "cuda")]
fn build_ptx() {
    println!("cargo:rerun-if-changed=kernels");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = cudaforge::KernelBuilder::new()
        .source_dir("kernels")
        .watch(["kernels/common.cuh"])
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()
        .unwrap_or_else(|e| panic!("srmae-model: compiling kernels/*.cu with nvcc failed (see scripts/cuda/setup-cuda-build.sh): {e}"));
    ptx.write(out_dir.join("ptx.rs")).unwrap_or_else(|e| panic!("srmae-model: writing {}: {e}", out_dir.join("ptx.rs").display()));
}
