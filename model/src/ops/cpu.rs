//! What the CPU kernels share: a contiguous F32 view of a tensor's storage,
//! a bounds-checked strided matrix product (oneMKL or OpenBLAS, else the
//! `gemm` crate that candle's CPU matmul also uses) that may write into
//! uninitialised memory, the output buffers' parallel fills, and the thread
//! setting candle uses.

use std::mem::MaybeUninit;

use candle_core::{bail, Device, Result, Shape, Storage, StorageRef, Tensor};

/// A contiguous F32 tensor on the CPU, its storage read-locked while the
/// view lives.
pub(crate) struct CpuF32<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    /// Fails (naming `op`) unless `t` is a contiguous F32 CPU tensor.
    pub(crate) fn new(t: &'a Tensor, op: &str) -> Result<CpuF32<'a>> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("{op}: needs a contiguous input, got strides {:?}", layout.stride())
        };
        match &*guard {
            Storage::Cpu(s) if s.as_slice::<f32>().is_ok() => {}
            _ => bail!("{op}: needs an F32 tensor on the CPU, got {:?} on {:?}", t.dtype(), t.device().location()),
        }
        Ok(CpuF32 { guard, start, end })
    }

    pub(crate) fn slice(&self) -> Result<&[f32]> {
        match &*self.guard {
            Storage::Cpu(s) => Ok(&s.as_slice::<f32>()?[self.start..self.end]),
            _ => bail!("not a CPU storage"),
        }
    }
}

/// Buffers of at least this many elements are filled by rayon's workers in
/// chunks of this size (zeros, and bias rows outside the CBLAS blocks): a
/// serial fill of a step's activations ran on the calling thread while the
/// workers waited, 7-8 % of a ViT-Ti/16 step's samples in a profile
/// (docs/MODEL.md).
const FILL_CHUNK: usize = 1 << 15;

/// `len` zeros (an output that a product or a kernel then accumulates
/// into), zeroed by libc's memset (AVX-512 stores here; a loop of element
/// writes becomes 16-byte stores in the baseline x86-64 build), in parallel
/// chunks when large.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if len < 2 * FILL_CHUNK {
        return vec![0f32; len];
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: each chunk is a unique borrow of `c.len()` elements, and
    // all-zero bytes are the f32 0.0.
    out.spare_capacity_mut()[..len].par_chunks_mut(FILL_CHUNK).for_each(|c| unsafe { std::ptr::write_bytes(c.as_mut_ptr(), 0, c.len()) });
    // SAFETY: the chunks cover all `len` elements of the spare capacity,
    // and each was zeroed just above.
    unsafe { out.set_len(len) };
    out
}

/// `v` as `MaybeUninit` values, to copy into memory not yet initialised.
pub(crate) fn as_uninit(v: &[f32]) -> &[MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and an initialised
    // value is a valid `MaybeUninit`; the view is read-only.
    unsafe { &*(v as *const [f32] as *const [MaybeUninit<f32>]) }
}

/// Writes `bias` into columns `0..n` of every row of `dst` (rows in
/// parallel when large), which makes it initialised.
fn fill_bias(dst: &mut MatMut, bias: &[f32]) {
    use rayon::prelude::*;
    let (m, n) = (dst.rows, dst.cols);
    let (bias, stride) = (as_uninit(&bias[..n]), dst.rs.max(n));
    let write = |row: &mut [MaybeUninit<f32>]| row[..n].copy_from_slice(bias);
    if m * n < 2 * FILL_CHUNK {
        dst.data.chunks_mut(stride).take(m).for_each(write);
    } else {
        dst.data.par_chunks_mut(stride).take(m).for_each(write);
    }
    dst.initialized = true;
}

/// A CPU F32 tensor owning `data`.
pub(crate) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// A strided `rows × cols` matrix inside a slice: element `(i, j)` is
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major, `rs` apart.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Mat<'a> {
        Mat { data, rows, cols, rs, cs: 1 }
    }
    /// The transpose (no copy).
    pub(crate) fn t(self) -> Mat<'a> {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// The mutable counterpart of `Mat`: an initialised slice (`rows`), or
/// memory a product is to overwrite without reading it (`uninit`).
pub(crate) struct MatMut<'a> {
    data: &'a mut [MaybeUninit<f32>],
    /// False for `uninit`: only products that overwrite (no `accumulate`) take it.
    initialized: bool,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
}

impl<'a> MatMut<'a> {
    pub(crate) fn rows(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> MatMut<'a> {
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`. Everything that
        // writes through a `MatMut` (the products, the zero fill for an empty
        // depth, the depth split's sums) writes initialised `f32` values, so
        // the caller's slice stays initialised.
        let data = unsafe { &mut *(data as *mut [f32] as *mut [MaybeUninit<f32>]) };
        MatMut { data, initialized: true, rows, cols, rs }
    }

    /// A view of memory that need not be initialised; a product into it
    /// (`accumulate` false, which is checked) writes every element `(i, j)`,
    /// `i < rows`, `j < cols`, and reads none.
    pub(crate) fn uninit(data: &'a mut [MaybeUninit<f32>], rows: usize, cols: usize, rs: usize) -> MatMut<'a> {
        MatMut { data, initialized: false, rows, cols, rs }
    }
}

/// A `len`-float buffer filled by `write` without zero-filling it first
/// (outputs that products or kernels overwrite: zero-filling them was most of
/// the parallel fills, 7 % of a fine-tuning step, docs/MODEL.md). Nothing is
/// exposed when `write` fails.
///
/// # Safety
/// When `write` returns `Ok`, it must have written every one of the `len`
/// elements of the slice it was given.
pub(crate) unsafe fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>]) -> Result<()>) -> Result<Vec<f32>> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if cfg!(debug_assertions) {
        // Test builds: an element `write` skips reads as NaN, which every
        // comparison with a composed path or a naive loop then reports.
        spare.fill(MaybeUninit::new(f32::NAN));
    }
    write(spare)?;
    // SAFETY: the caller guarantees that `write` initialised all `len`
    // elements of the spare capacity, which is at least `len` long.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// The initialised view of a slice that has been written in full.
///
/// # Safety
/// Every element of `data` must have been written.
pub(crate) unsafe fn assume_written(data: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller
    // guarantees that every element is initialised.
    unsafe { &mut *(data as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// Whether products split across threads (`Rayon`) or run on this thread
/// (inside an already parallel loop).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    All,
    One,
}

/// `dst = (accumulate ? dst : 0) + scale * lhs · rhs`.
///
/// With the `mkl` feature (the `srmae` binary's default) or `openblas` the
/// product runs in that library's CBLAS `sgemm` (one thread per call), split
/// into a fixed number of row or column blocks that rayon runs in parallel
/// (long-depth products with small outputs: into depth slices instead,
/// `depth_slices`); without either,
/// or for views CBLAS cannot take, in the `gemm` crate (candle's CPU GEMM)
/// on rayon's threads. Measured side by side in docs/MODEL.md (`srmae bench
/// ops --only gemm`, `srmae bench step`).
pub(crate) fn matmul(dst: MatMut, lhs: Mat, rhs: Mat, scale: f32, accumulate: bool, threads: Threads) -> Result<()> {
    matmul_in(dst, lhs, rhs, scale, accumulate, threads, Backend::Blas)
}

/// `dst = bias + lhs · rhs`, `bias` one value per column (broadcast over
/// the rows); `dst` may be uninitialised. In CBLAS's row or column blocks
/// each block writes its bias rows just before its product accumulates onto
/// them, so they are still in that core's cache: filling the whole output
/// first wrote and then re-read it from memory (the bias copies were 2.7 %
/// of a ViT-Ti SRMAE step's samples, docs/MODEL.md). Elsewhere (the `gemm`
/// crate, depth slices, an empty depth) the output is filled, then
/// accumulated onto.
pub(crate) fn matmul_bias(dst: MatMut, lhs: Mat, rhs: Mat, bias: &[f32], threads: Threads) -> Result<()> {
    if bias.len() != dst.cols {
        bail!("matmul: a bias of {} values for {} columns", bias.len(), dst.cols);
    }
    matmul_checked(dst, lhs, rhs, 1.0, Init::Bias(bias), threads, Backend::Blas, true)
}

/// What a product does with its output's prior contents.
#[derive(Clone, Copy)]
enum Init<'a> {
    /// Overwrite: `dst = p`.
    Overwrite,
    /// Accumulate: `dst += p`.
    Accumulate,
    /// Overwrite with a bias row: `dst = bias + p`.
    Bias(&'a [f32]),
}

/// Which library runs a product (`Blas` falls back to `GemmCrate` without
/// the `mkl` or `openblas` feature or for views CBLAS cannot take).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Blas,
    GemmCrate,
}

fn matmul_in(dst: MatMut, lhs: Mat, rhs: Mat, scale: f32, accumulate: bool, threads: Threads, backend: Backend) -> Result<()> {
    matmul_checked(dst, lhs, rhs, scale, if accumulate { Init::Accumulate } else { Init::Overwrite }, threads, backend, true)
}

/// `matmul_in`, with the depth split (`depth_slices`) when `may_split`.
#[allow(clippy::too_many_arguments)]
fn matmul_checked(mut dst: MatMut, lhs: Mat, rhs: Mat, scale: f32, init: Init, threads: Threads, backend: Backend, may_split: bool) -> Result<()> {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    let accumulate = matches!(init, Init::Accumulate);
    if lhs.rows != m || rhs.cols != n || rhs.rows != k {
        bail!("matmul: [{m}, {n}] = [{}, {}] x [{}, {}]", lhs.rows, lhs.cols, rhs.rows, rhs.cols);
    }
    if !fits(dst.data.len(), m, n, dst.rs, 1) || !fits(lhs.data.len(), m, k, lhs.rs, lhs.cs) || !fits(rhs.data.len(), k, n, rhs.rs, rhs.cs) {
        bail!("matmul: a strided view reaches past its slice");
    }
    if accumulate && !dst.initialized {
        bail!("matmul: accumulating into an uninitialised output");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        match init {
            Init::Accumulate => {}
            Init::Overwrite => (0..m).for_each(|i| dst.data[i * dst.rs..i * dst.rs + n].fill(MaybeUninit::new(0.0))),
            Init::Bias(bias) => fill_bias(&mut dst, bias),
        }
        return Ok(());
    }
    let slices = depth_slices(m, n, k);
    #[cfg(any(feature = "mkl", feature = "openblas"))]
    if backend == Backend::Blas && !(may_split && slices > 1) {
        if let (Some(a), Some(b)) = (blas::Operand::of(&lhs), blas::Operand::of(&rhs)) {
            blas::sgemm_blocks(dst, a, b, (m, n, k), scale, init, threads);
            return Ok(());
        }
    }
    // The other paths accumulate onto a bias written first.
    if let Init::Bias(bias) = init {
        fill_bias(&mut dst, bias);
        return matmul_checked(dst, lhs, rhs, scale, Init::Accumulate, threads, backend, may_split);
    }
    if may_split && slices > 1 {
        return matmul_depth_split(dst, lhs, rhs, scale, accumulate, slices, threads, backend);
    }
    let _ = backend;
    let nthreads = candle_core::utils::get_num_threads();
    let parallelism = match (threads, nthreads) {
        (Threads::All, n) if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the three views were checked above to lie inside their slices
    // for the given sizes and strides (every index `(i, j)` with `i < rows`,
    // `j < cols` is at most `(rows-1)*rs + (cols-1)*cs < len`); `dst` is a
    // unique borrow, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr().cast::<f32>(),
            1,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Products with a small output and a long depth (the weight gradients
/// `dW = dzᵀ x` over the B·N rows of a batch: `[out, in]` from thousands of
/// rows) are split along the depth, not into blocks of the output: an output
/// block re-reads and re-packs the whole depth of the other operand, and
/// MKL runs such products at 60-115 GFLOP/s per core in 3-8 output blocks
/// against 150-170 in depth slices of ~800 rows (`[96..384, 6272] x [6272,
/// 96..384]`, one core of the AVX-512 machine). The slice count is a power of
/// two (even shares on 2, 4 or 8 threads) fixed by the shape, never by the
/// thread count, and the partial products are added in slice order, so the
/// result is the same on any number of threads.
const DEPTH_SLICE_MIN: usize = 512;
/// At most this many depth slices.
const DEPTH_SLICES_MAX: usize = 8;
/// Largest output (elements) that takes the depth split: `[1024, 256]`.
const DEPTH_SPLIT_MAX_OUTPUT: usize = 1 << 18;

/// How many depth slices a `[m, k] x [k, n]` product runs in (1: none).
fn depth_slices(m: usize, n: usize, k: usize) -> usize {
    let s = (k / DEPTH_SLICE_MIN).min(DEPTH_SLICES_MAX);
    if m * n > DEPTH_SPLIT_MAX_OUTPUT || s < 2 {
        1
    } else {
        1 << s.ilog2()
    }
}

/// `dst = (accumulate ? dst : 0) + scale · Σ_s lhs[:, K_s] · rhs[K_s, :]` over
/// `slices` consecutive depth ranges `K_s`, each a single-threaded product
/// into its own buffer (slices in parallel for `Threads::All`), then added
/// into `dst` in slice order, rows in parallel.
#[allow(clippy::too_many_arguments)]
fn matmul_depth_split(dst: MatMut, lhs: Mat, rhs: Mat, scale: f32, accumulate: bool, slices: usize, threads: Threads, backend: Backend) -> Result<()> {
    use rayon::prelude::*;
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    let bounds = |s: usize| (s * k / slices, (s + 1) * k / slices);
    let partial = |s: usize| {
        let (k0, k1) = bounds(s);
        let lhs_s = Mat { data: &lhs.data[k0 * lhs.cs..], rows: m, cols: k1 - k0, rs: lhs.rs, cs: lhs.cs };
        let rhs_s = Mat { data: &rhs.data[k0 * rhs.rs..], rows: k1 - k0, cols: n, rs: rhs.rs, cs: rhs.cs };
        // SAFETY: an overwriting product into the whole `[m, n]` buffer
        // (row stride n) writes all m·n elements.
        unsafe { written(m * n, |part| matmul_checked(MatMut::uninit(part, m, n, n), lhs_s, rhs_s, scale, Init::Overwrite, Threads::One, backend, false)) }
    };
    let partials: Vec<Vec<f32>> = match threads {
        Threads::All => (0..slices).into_par_iter().map(partial).collect::<Result<_>>()?,
        Threads::One => (0..slices).map(partial).collect::<Result<_>>()?,
    };
    let add_row = |(i, row): (usize, &mut [MaybeUninit<f32>])| {
        let row = &mut row[..n];
        if !accumulate {
            row.iter_mut().zip(&partials[0][i * n..(i + 1) * n]).for_each(|(d, &p)| {
                d.write(p);
            });
        }
        // SAFETY: the row is initialised: by the caller when accumulating
        // (an uninitialised view is refused above), else by slice 0 just now.
        let row = unsafe { assume_written(row) };
        for part in &partials[usize::from(!accumulate)..] {
            row.iter_mut().zip(&part[i * n..(i + 1) * n]).for_each(|(d, p)| *d += p);
        }
    };
    match threads {
        Threads::All => dst.data.par_chunks_mut(dst.rs.max(n)).take(m).enumerate().for_each(add_row),
        Threads::One => dst.data.chunks_mut(dst.rs.max(n)).take(m).enumerate().for_each(add_row),
    }
    Ok(())
}

/// GFLOP/s of `[m, k] x [k, n]` products on all threads, median of `reps`
/// after one warm-up: the benchmark that compares the CPU backends with
/// PyTorch's (`srmae bench ops`). `weight_grad`: the left operand is read
/// transposed (`dzᵀ x`, the weight gradient's layout); otherwise the right
/// one is (`x Wᵀ`, the forward's).
pub fn gemm_gflops(m: usize, k: usize, n: usize, reps: usize, backend: Backend, weight_grad: bool) -> Result<f64> {
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let mut times = Vec::with_capacity(reps);
    for r in 0..=reps {
        let t = std::time::Instant::now();
        let (lhs, rhs) = if weight_grad { (Mat::rows(&a, k, m, m).t(), Mat::rows(&b, k, n, n)) } else { (Mat::rows(&a, m, k, k), Mat::rows(&b, n, k, k).t()) };
        matmul_in(MatMut::rows(&mut c, m, n, n), lhs, rhs, 1.0, false, Threads::All, backend)?;
        if r > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (m * n * k) as f64 / times[times.len() / 2].max(1e-12) / 1e9)
}

/// The name of the library behind `Backend::Blas` (benchmark output).
pub fn blas_name() -> &'static str {
    if cfg!(feature = "mkl") {
        "mkl"
    } else if cfg!(feature = "openblas") {
        "openblas"
    } else {
        "gemm-crate"
    }
}

/// A CBLAS `sgemm`, linked statically (`model/build.rs`), one thread per
/// call, so that rayon stays the only pool that runs work (a BLAS's own
/// threads would spin beside it) and concurrent calls from rayon's workers
/// are safe: oneMKL's sequential layer (feature `mkl`), or OpenBLAS's
/// thread-safe pthread build set to one thread (feature `openblas`; its
/// "serial" build is not safe: its buffer pool has no locks).
#[cfg(any(feature = "mkl", feature = "openblas"))]
mod blas {
    use std::ops::Range;
    use std::os::raw::c_int;

    use rayon::prelude::*;

    use super::{Init, Mat, MatMut, Threads};

    /// Writes `bias` into rows `rows` of `dst`'s columns `cols` (`bias` holds
    /// one value per column of the whole matrix).
    ///
    /// # Safety
    /// `c` must point to a matrix with row stride `ldc` in which every element
    /// `(i, j)`, `i` in `rows`, `j` in `cols`, is valid for writes and not
    /// accessed by anyone else during the call; `cols.end <= bias.len()`.
    unsafe fn write_bias(c: *mut f32, ldc: usize, rows: Range<usize>, cols: Range<usize>, bias: &[f32]) {
        let src = &bias[cols.clone()];
        for i in rows {
            // SAFETY: row `i`'s columns `cols` lie inside the matrix (the
            // caller's guarantee), and `bias` is other memory.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), c.add(i * ldc + cols.start), src.len()) };
        }
    }

    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    #[cfg(not(feature = "mkl"))]
    extern "C" {
        fn openblas_set_num_threads(n: c_int);
    }

    extern "C" {
        #[allow(clippy::too_many_arguments)]
        fn cblas_sgemm(
            order: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
    }

    /// A view as CBLAS sees it: row-major storage, maybe transposed.
    #[derive(Clone, Copy)]
    pub(super) struct Operand {
        ptr: *const f32,
        trans: bool,
        ld: usize,
        /// Elements between consecutive logical rows and columns.
        rs: usize,
        cs: usize,
    }

    impl Operand {
        /// None when neither stride is 1 or a leading dimension is too small.
        pub(super) fn of(v: &Mat) -> Option<Operand> {
            let ptr = v.data.as_ptr();
            let fits_i32 = [v.rows, v.cols, v.rs, v.cs].iter().all(|&x| x < i32::MAX as usize / 2);
            if !fits_i32 {
                return None;
            }
            if v.cs == 1 && (v.rows == 1 || v.rs >= v.cols.max(1)) {
                Some(Operand { ptr, trans: false, ld: if v.rows == 1 { v.cols.max(1) } else { v.rs }, rs: v.rs, cs: 1 })
            } else if v.rs == 1 && (v.cols == 1 || v.cs >= v.rows.max(1)) {
                Some(Operand { ptr, trans: true, ld: if v.cols == 1 { v.rows.max(1) } else { v.cs }, rs: 1, cs: v.cs })
            } else {
                None
            }
        }
    }

    /// Raw pointers that cross into rayon's workers.
    #[derive(Clone, Copy)]
    struct Shared(Operand, Operand, *mut f32);
    // SAFETY: the pointers are only dereferenced by `cblas_sgemm` inside
    // `sgemm_blocks`, which blocks until every worker is done; workers read
    // `lhs`/`rhs` and write disjoint blocks of `dst`.
    unsafe impl Send for Shared {}
    // SAFETY: as above.
    unsafe impl Sync for Shared {}

    impl Shared {
        fn parts(&self) -> (Operand, Operand, *mut f32) {
            (self.0, self.1, self.2)
        }
    }

    /// Blocks per product: fixed by the shape (never by the thread count, so
    /// results are the same on any number of threads), each at least 64 wide.
    fn blocks(len: usize) -> usize {
        (len / 64).clamp(1, 8)
    }

    /// `dst = beta * dst + scale * a · b` in blocks of rows (or of columns,
    /// when there are more columns), in parallel for `Threads::All`.
    pub(super) fn sgemm_blocks(dst: MatMut, a: Operand, b: Operand, (m, n, k): (usize, usize, usize), scale: f32, init: Init, threads: Threads) {
        #[cfg(not(feature = "mkl"))]
        {
            static ONE_THREAD: std::sync::Once = std::sync::Once::new();
            // SAFETY: a plain setter of OpenBLAS's global thread count, run
            // once before the first product.
            ONE_THREAD.call_once(|| unsafe { openblas_set_num_threads(1) });
        }
        let by_rows = m >= n;
        let len = if by_rows { m } else { n };
        let parts = if threads == Threads::All { blocks(len) } else { 1 };
        let step = len.div_ceil(parts);
        let shared = Shared(a, b, dst.data.as_mut_ptr().cast::<f32>());
        let ldc = dst.rs;
        let run = |p: usize| {
            let (a, b, c) = shared.parts();
            let (lo, hi) = (p * step, ((p + 1) * step).min(len));
            if lo >= hi {
                return;
            }
            let (mm, nn) = if by_rows { (hi - lo, n) } else { (m, hi - lo) };
            let (a_off, b_off, c_off) = if by_rows { (lo * a.rs, 0, lo * ldc) } else { (0, lo * b.cs, lo) };
            if let Init::Bias(bias) = init {
                let (rows, cols) = if by_rows { (lo..hi, 0..n) } else { (0..m, lo..hi) };
                // SAFETY: this block's elements (rows × cols) lie inside
                // `dst` and no other block touches them (see below);
                // `matmul_bias` checked that `bias` has `n` values.
                unsafe { write_bias(c, ldc, rows, cols, bias) };
            }
            // SAFETY: `matmul` checked that every element of the three
            // views lies inside its slice; a block addresses a subset of
            // those elements (rows or columns `lo..hi`), so every pointer
            // and offset below stays in bounds. Blocks write disjoint
            // elements of `dst`, which no other reference aliases while
            // this function runs (it holds the unique borrow). Sizes and
            // leading dimensions fit in `c_int` (checked in `Operand::of`;
            // `ldc` is a row stride of a slice of at most that size).
            unsafe {
                cblas_sgemm(
                    ROW_MAJOR,
                    if a.trans { TRANS } else { NO_TRANS },
                    if b.trans { TRANS } else { NO_TRANS },
                    mm as c_int,
                    nn as c_int,
                    k as c_int,
                    scale,
                    a.ptr.add(a_off),
                    a.ld as c_int,
                    b.ptr.add(b_off),
                    b.ld as c_int,
                    if matches!(init, Init::Overwrite) { 0.0 } else { 1.0 },
                    c.add(c_off),
                    ldc.max(nn) as c_int,
                );
            }
        };
        if parts == 1 {
            run(0);
        } else {
            (0..parts).into_par_iter().for_each(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_zero_fills_on_both_sides_of_the_threshold() {
        for len in [0, 5, 2 * FILL_CHUNK - 1, 2 * FILL_CHUNK, 5 * FILL_CHUNK + 17] {
            let z = zeros(len);
            assert_eq!(z.len(), len);
            assert!(z.iter().all(|&v| v.to_bits() == 0), "{len} zeros");
        }
    }

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn strided_products_match_a_naive_loop() {
        for backend in [Backend::Blas, Backend::GemmCrate] {
            strided_products_match_a_naive_loop_in(backend);
        }
    }

    fn strided_products_match_a_naive_loop_in(backend: Backend) {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        // Plain, then with a transposed copy of b read through `t()`, into a padded dst.
        let mut c = vec![0f32; m * n];
        matmul_in(MatMut::rows(&mut c, m, n, n), Mat::rows(&a, m, k, k), Mat::rows(&b, k, n, n), 1.0, false, Threads::All, backend).unwrap();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut padded = vec![1f32; m * (n + 2)];
        matmul_in(MatMut::rows(&mut padded, m, n, n + 2), Mat::rows(&a, m, k, k), Mat::rows(&bt, n, k, k).t(), 2.0, true, Threads::One, backend).unwrap();
        for i in 0..m {
            for j in 0..n {
                assert!((c[i * n + j] - want[i * n + j]).abs() < 1e-5);
                assert!((padded[i * (n + 2) + j] - (1.0 + 2.0 * want[i * n + j])).abs() < 1e-5);
            }
            assert_eq!(padded[i * (n + 2) + n], 1.0, "padding untouched");
        }
        // A view past its slice is refused, not read.
        let mut small = vec![0f32; 4];
        assert!(matmul_in(MatMut::rows(&mut small, m, n, n), Mat::rows(&a, m, k, k), Mat::rows(&b, k, n, n), 1.0, false, Threads::One, backend).is_err());
    }

    #[test]
    fn overwriting_products_fill_uninitialised_buffers_and_accumulating_ones_are_refused() {
        let (m, k, n) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.7).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        for backend in [Backend::Blas, Backend::GemmCrate] {
            // SAFETY: an overwriting product into the whole [m, n] buffer writes all of it
            // (and in this test build an element it skipped would read as NaN below).
            let c = unsafe { written(m * n, |c| matmul_in(MatMut::uninit(c, m, n, n), Mat::rows(&a, m, k, k), Mat::rows(&b, k, n, n), 1.0, false, Threads::All, backend)) }.unwrap();
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5, "{backend:?}: {x} vs {y}");
            }
            let mut buf = vec![MaybeUninit::new(0f32); m * n];
            assert!(matmul_in(MatMut::uninit(&mut buf, m, n, n), Mat::rows(&a, m, k, k), Mat::rows(&b, k, n, n), 1.0, true, Threads::All, backend).is_err());
        }
    }

    /// `bias + a · b` into an uninitialised buffer (NaN in this test build, so
    /// a skipped element shows): row blocks, column blocks (more columns
    /// than rows), a depth split, an empty depth and a padded output, for
    /// both backends; a bias of the wrong length is refused.
    #[test]
    fn bias_products_match_a_naive_loop() {
        for &(m, k, n) in &[(7usize, 5usize, 9usize), (300, 70, 130), (40, 30, 260), (5, 5 * DEPTH_SLICE_MIN + 333, 3), (6, 0, 4)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 3.0).collect();
            let want = naive(&a, &b, m, k, n);
            for backend in [Backend::Blas, Backend::GemmCrate] {
                for threads in [Threads::All, Threads::One] {
                    let ld = n + 2;
                    // SAFETY: the product writes columns 0..n of every row; the two
                    // padding columns per row are written just after.
                    let c = unsafe {
                        written(m * ld, |c| {
                            matmul_checked(MatMut::uninit(c, m, n, ld), Mat::rows(&a, m, k, k), Mat::rows(&b, k, n, n), 1.0, Init::Bias(&bias), threads, backend, true)?;
                            c.chunks_mut(ld).for_each(|row| row[n..].fill(MaybeUninit::new(7.0)));
                            Ok(())
                        })
                    }
                    .unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let (got, want) = (c[i * ld + j], bias[j] + want[i * n + j]);
                            assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "[{m}, {k}, {n}] {backend:?} at ({i}, {j}): {got} vs {want}");
                        }
                        assert_eq!(&c[i * ld + n..(i + 1) * ld], &[7.0, 7.0], "padding untouched");
                    }
                }
            }
            let mut buf = vec![MaybeUninit::new(0f32); m * n];
            assert!(matmul_bias(MatMut::uninit(&mut buf, m, n, n), Mat::rows(&a, m, k, k), Mat::rows(&b, k, n, n), &bias[1..], Threads::All).is_err());
        }
    }

    #[test]
    fn depth_split_products_match_a_naive_loop_on_any_thread_count() {
        // A weight-gradient layout: dzᵀ [m, k] read transposed from [k, m], 4 slices, k not a multiple of 4.
        let (m, k, n) = (5, 5 * DEPTH_SLICE_MIN + 333, 3);
        assert_eq!(depth_slices(m, n, k), 4);
        assert_eq!(depth_slices(m, n, DEPTH_SLICE_MIN * 2 - 1), 1, "too short to split");
        assert_eq!(depth_slices(1024, 257, 8 * DEPTH_SLICE_MIN), 1, "output too large to split");
        assert_eq!(depth_slices(m, n, 100 * DEPTH_SLICE_MIN), DEPTH_SLICES_MAX);
        let dz: Vec<f32> = (0..k * m).map(|i| (i as f32 * 0.37).sin()).collect();
        let x: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let dz_t: Vec<f32> = (0..m * k).map(|i| dz[(i % k) * m + i / k]).collect();
        let want = naive(&dz_t, &x, m, k, n);
        for backend in [Backend::Blas, Backend::GemmCrate] {
            let run = |threads: usize, accumulate: bool, within: Threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut c = vec![0.5f32; m * (n + 1)];
                pool.install(|| matmul_in(MatMut::rows(&mut c, m, n, n + 1), Mat::rows(&dz, k, m, m).t(), Mat::rows(&x, k, n, n), 2.0, accumulate, within, backend)).unwrap();
                c
            };
            let (one, three) = (run(1, false, Threads::All), run(3, false, Threads::All));
            assert_eq!(one, three, "{backend:?}: the same sums in the same order on 1 and 3 threads");
            assert_eq!(one, run(3, false, Threads::One), "{backend:?}: the same sums from a single-threaded caller");
            let acc = run(3, true, Threads::All);
            for i in 0..m {
                for j in 0..n {
                    let tol = 1e-3 * (1.0 + want[i * n + j].abs());
                    assert!((one[i * (n + 1) + j] - 2.0 * want[i * n + j]).abs() < tol, "{backend:?} ({i}, {j})");
                    assert!((acc[i * (n + 1) + j] - (0.5 + 2.0 * want[i * n + j])).abs() < tol, "{backend:?} ({i}, {j}) accumulated");
                }
                assert_eq!(one[i * (n + 1) + n], 0.5, "padding untouched");
            }
        }
    }
}
