//! With feature `cuda`: compiles `kernels/*.cu` (the fused ops' CUDA kernels)
//! to PTX with nvcc through cudaforge, into `OUT_DIR/ptx.rs` (one `&str`
//! constant per file, embedded in the binary; no GPU needed to build).
//!
//! Links a CBLAS `sgemm` for the fused CPU ops, statically, so the binary
//! needs no BLAS at run time (off for this crate alone and for the Python
//! wheel, where the gemm crate runs the products):
//! - feature `mkl` (the `srmae` binary's default): Intel oneMKL's LP64
//!   interface, sequential layer and core, from the folder `SRMAE_MKL_DIR`
//!   (default: where `scripts/mkl.sh` puts them,
//!   `${XDG_CACHE_HOME:-$HOME/.cache}/srmae/mkl-2026.2.0`);
//! - feature `openblas`: OpenBLAS's thread-safe (pthread) build, from
//!   `SRMAE_OPENBLAS_DIR` (default: Debian's libopenblas-pthread-dev), set
//!   to one thread per call.
//!
//! Either way rayon splits the products and runs the blocks; with both
//! features on, MKL is linked.

use std::path::PathBuf;

fn main() {
    #[cfg(feature = "cuda")]
    build_ptx();
    println!("cargo:rerun-if-env-changed=SRMAE_OPENBLAS_DIR");
    println!("cargo:rerun-if-env-changed=SRMAE_MKL_DIR");
    if std::env::var_os("CARGO_FEATURE_MKL").is_some() {
        link_mkl();
    } else if std::env::var_os("CARGO_FEATURE_OPENBLAS").is_some() {
        link_openblas();
    }
}

/// The MKL release `scripts/mkl.sh` installs.
const MKL_VERSION: &str = "2026.2.0";

fn link_mkl() {
    let dir = std::env::var_os("SRMAE_MKL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("srmae").join(format!("mkl-{MKL_VERSION}"))
    });
    // Link order matters for static archives: interface, threading layer, core.
    let libs = ["mkl_intel_lp64", "mkl_sequential", "mkl_core"];
    for lib in libs {
        let file = dir.join(format!("lib{lib}.a"));
        if !file.is_file() {
            panic!(
                "srmae-model: {} not found. Install oneMKL's static libraries with `scripts/mkl.sh` \
                 (`scripts/setup.sh` runs it), set SRMAE_MKL_DIR to a folder holding {}, \
                 or build with `--no-default-features` (the gemm crate then runs the products) \
                 or `--no-default-features --features openblas`.",
                file.display(),
                libs.map(|l| format!("lib{l}.a")).join(", ")
            );
        }
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    // `-bundle`: handed to the final link rather than copied into this
    // crate's rlib (libmkl_core.a alone is 570 MB; the linker keeps the
    // few megabytes the products use).
    for lib in libs {
        println!("cargo:rustc-link-lib=static:-bundle={lib}");
    }
    for lib in ["pthread", "m", "dl"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}

fn link_openblas() {
    let dir = std::env::var_os("SRMAE_OPENBLAS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/openblas-pthread"));
    if !dir.join("libopenblas.a").is_file() {
        panic!(
            "srmae-model: {} not found. Install OpenBLAS's static library \
             (apt-get install libopenblas-pthread-dev), set SRMAE_OPENBLAS_DIR \
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
