//! The CUDA side of the fused ops: PTX modules compiled from
//! `model/kernels/*.cu` by `build.rs` (nvcc through cudaforge, no GPU needed
//! to build), kernel launches, and the products as cuBLAS strided-batched
//! GEMMs in row-major terms.
//!
//! Precision: F32 tensors in and out; under a BF16 autocast scope the product
//! operands are copied to BF16 first (`f32_to_bf16`) and cuBLAS accumulates
//! and writes in F32 (`CUBLAS_COMPUTE_32F`), as `torch.autocast` does for a
//! product whose result feeds F32 work. Without autocast the products are
//! full F32 (no TF32), so the CUDA ops match the CPU ones to float rounding.
//! Every reduction runs in a fixed order (see `kernels/common.cuh`), so a
//! step is bit-for-bit repeatable on one GPU.
//!
//! Which implementation runs is `super::use_fused_kernel`'s choice; the model
//! code never sees this file.

use candle_core::cuda_backend::cudarc::cublas::{result as cublas_result, sys as cublas_sys};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg, SyncOnDrop};
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchArgs};
use candle_core::cuda_backend::WrapErr;
use candle_core::op::BackpropOp;
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage, StorageRef, Tensor};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// The kernel files, one PTX module each.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Module {
    Attention,
    LayerNorm,
    Linear,
    AdamW,
    GradNorm,
    Convert,
}

impl Module {
    fn name_and_ptx(self) -> (&'static str, &'static str) {
        match self {
            Module::Attention => ("srmae-attention", ptx::ATTENTION),
            Module::LayerNorm => ("srmae-layer-norm", ptx::LAYER_NORM),
            Module::Linear => ("srmae-linear", ptx::LINEAR),
            Module::AdamW => ("srmae-adamw", ptx::ADAMW),
            Module::GradNorm => ("srmae-grad-norm", ptx::GRAD_NORM),
            Module::Convert => ("srmae-convert", ptx::CONVERT),
        }
    }
}

/// A loaded kernel and the device's stream it launches on.
pub(crate) struct Kernel {
    func: CudaFunction,
    stream: std::sync::Arc<CudaStream>,
}

impl Kernel {
    /// Arguments of one launch.
    pub(crate) fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// Loads (once per device) and returns kernel `name` of `module`.
pub(crate) fn func(dev: &CudaDevice, module: Module, name: &str) -> Result<Kernel> {
    let (module_name, ptx) = module.name_and_ptx();
    let func = dev.get_or_load_custom_func(name, module_name, ptx)?.into_cuda_function();
    Ok(Kernel { func, stream: dev.cuda_stream() })
}

/// Threads per block of the elementwise and row kernels.
pub(crate) const THREADS: u32 = 128;
/// Rows per block of the warp-per-row kernels (`THREADS / 32`).
pub(crate) const ROWS_PER_BLOCK: u32 = THREADS / 32;

/// A grid-stride launch over `n` elements.
pub(crate) fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 8192) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// One warp per row.
pub(crate) fn per_row(rows: usize) -> LaunchConfig {
    let blocks = rows.div_ceil(ROWS_PER_BLOCK as usize).max(1) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Row chunks of the two-pass column sums: a function of `rows` alone, so the
/// order of additions never changes for a given shape.
pub(crate) fn column_chunks(rows: usize) -> (usize, usize) {
    let chunks = rows.clamp(1, 128);
    let per_chunk = rows.div_ceil(chunks).max(1);
    (rows.div_ceil(per_chunk).max(1), per_chunk)
}

/// The contiguous F32 data of a CUDA storage, from a `cuda_fwd` argument.
pub(crate) fn storage_view<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{op}: needs a contiguous input") };
    Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
}

/// The contiguous F32 inputs of a `cuda_fwd` and their device.
pub(crate) fn storage_views<'a, const N: usize>(inputs: [(&'a CudaStorage, &Layout); N], op: &str) -> Result<(CudaDevice, [CudaView<'a, f32>; N])> {
    let Some(first) = inputs.first() else { bail!("{op}: no inputs") };
    let dev = first.0.device.clone();
    let mut views = Vec::with_capacity(N);
    for (s, l) in inputs {
        views.push(storage_view(s, l, op)?);
    }
    let views: [CudaView<'a, f32>; N] = views.try_into().map_err(|_| candle_core::Error::Msg(format!("{op}: input count")))?;
    Ok((dev, views))
}

/// A tensor's CUDA F32 storage, borrowed for the duration of a backward.
pub(crate) struct CudaF32<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl<'a> CudaF32<'a> {
    pub(crate) fn new(t: &'a Tensor, op: &str) -> Result<CudaF32<'a>> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else { bail!("{op}: needs a contiguous tensor") };
        if !matches!(&*guard, Storage::Cuda(_)) || t.dtype() != DType::F32 {
            bail!("{op}: expected an F32 CUDA tensor, got {:?} on {:?}", t.dtype(), t.device().location());
        }
        Ok(CudaF32 { guard, start, len: end - start })
    }

    pub(crate) fn view(&self) -> Result<CudaView<'_, f32>> {
        match &*self.guard {
            Storage::Cuda(s) => Ok(s.as_cuda_slice::<f32>()?.slice(self.start..self.start + self.len)),
            _ => bail!("expected a CUDA tensor"),
        }
    }

    pub(crate) fn device(&self) -> Result<CudaDevice> {
        match &*self.guard {
            Storage::Cuda(s) => Ok(s.device.clone()),
            _ => bail!("expected a CUDA tensor"),
        }
    }
}

/// A new F32 buffer whose every element the caller writes before reading.
pub(crate) fn alloc(dev: &CudaDevice, n: usize) -> Result<CudaSlice<f32>> {
    // SAFETY: each caller overwrites the whole buffer (a kernel or a GEMM with
    // beta = 0) before anything reads it.
    unsafe { dev.alloc::<f32>(n.max(1)) }
}

/// A buffer for the BF16 copy a kernel writes beside its F32 result, when
/// the products run in BF16.
pub(crate) fn alloc_bf16_copy(dev: &CudaDevice, n: usize, bf16: bool) -> Result<Option<CudaSlice<u16>>> {
    if !bf16 {
        return Ok(None);
    }
    // SAFETY: the kernel given this buffer writes all n elements before anything reads them.
    Ok(Some(unsafe { dev.alloc::<u16>(n.max(1))? }))
}

/// A tensor (no graph) over a CUDA buffer.
pub(crate) fn tensor(slice: CudaSlice<f32>, dev: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    Tensor::from_storage(Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())), shape, BackpropOp::none(), false)
}

/// A candle storage over a CUDA buffer (a `cuda_fwd` result).
pub(crate) fn storage(slice: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

/// A BF16 copy (as raw 16-bit words) of `src`.
pub(crate) fn to_bf16(dev: &CudaDevice, src: &CudaView<'_, f32>) -> Result<CudaSlice<u16>> {
    let n = src.len();
    // SAFETY: the kernel below writes all n elements.
    let dst = unsafe { dev.alloc::<u16>(n.max(1))? };
    let f = func(dev, Module::Convert, "f32_to_bf16")?;
    let mut b = f.builder();
    let n64 = n as i64;
    b.arg(src);
    b.arg(&dst);
    b.arg(&n64);
    // SAFETY: src holds n floats, dst n 16-bit words; the kernel stays in bounds.
    unsafe { b.launch(elementwise(n)) }.w()?;
    Ok(dst)
}

/// Product operands: F32, or BF16 copies made for an autocast scope.
pub(crate) enum Operand<'a> {
    F32(CudaView<'a, f32>),
    Bf16(CudaSlice<u16>),
}

impl<'a> Operand<'a> {
    /// `src` as the product precision wants it.
    pub(crate) fn new(dev: &CudaDevice, src: CudaView<'a, f32>, bf16: bool) -> Result<Operand<'a>> {
        if bf16 {
            Ok(Operand::Bf16(to_bf16(dev, &src)?))
        } else {
            Ok(Operand::F32(src))
        }
    }

    /// The BF16 copy when a kernel wrote one, else the F32 original.
    pub(crate) fn f32_or_bf16(f32: &'a CudaSlice<f32>, bf16: Option<CudaSlice<u16>>) -> Operand<'a> {
        match bf16 {
            Some(t) => Operand::Bf16(t),
            None => Operand::F32(f32.slice(..)),
        }
    }

    fn dtype(&self) -> cublas_sys::cudaDataType {
        match self {
            Operand::F32(_) => cublas_sys::cudaDataType::CUDA_R_32F,
            Operand::Bf16(_) => cublas_sys::cudaDataType::CUDA_R_16BF,
        }
    }

    fn device_ptr<'s>(&'s self, stream: &'s CudaStream) -> (u64, SyncOnDrop<'s>) {
        match self {
            Operand::F32(v) => v.device_ptr(stream),
            Operand::Bf16(s) => s.device_ptr(stream),
        }
    }

    fn element_bytes(&self) -> u64 {
        match self {
            Operand::F32(_) => 4,
            Operand::Bf16(_) => 2,
        }
    }
}

/// A row-major matrix inside an operand: first element `offset`, row stride
/// `ld`, `batch_stride` elements between the matrices of a batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub offset: usize,
    pub ld: usize,
    pub batch_stride: usize,
    pub transposed: bool,
}

impl Mat {
    pub(crate) fn rows(offset: usize, ld: usize, batch_stride: usize) -> Mat {
        Mat { offset, ld, batch_stride, transposed: false }
    }

    pub(crate) fn t(self) -> Mat {
        Mat { transposed: !self.transposed, ..self }
    }
}

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("cublas: {what} = {v} does not fit a 32-bit int")))
}

/// Row-major `C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C` for `batch`
/// matrices, C in F32. Row-major `C = A B` is column-major `Cᵀ = Bᵀ Aᵀ`, so
/// cuBLAS gets B first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    dev: &CudaDevice,
    (m, n, k): (usize, usize, usize),
    a: (&Operand<'_>, Mat),
    b: (&Operand<'_>, Mat),
    c: (&mut CudaSlice<f32>, Mat),
    alpha: f32,
    beta: f32,
    batch: usize,
) -> Result<()> {
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    let (a, am) = a;
    let (b, bm) = b;
    let (c, cm) = c;
    if a.element_bytes() != b.element_bytes() {
        bail!("cublas: operands of one product must share a precision");
    }
    let stream = dev.cuda_stream();
    let (pa, _ga) = a.device_ptr(&stream);
    let (pb, _gb) = b.device_ptr(&stream);
    let (pc, _gc) = c.device_ptr_mut(&stream);
    let op = |t: bool| if t { cublas_sys::cublasOperation_t::CUBLAS_OP_T } else { cublas_sys::cublasOperation_t::CUBLAS_OP_N };
    let blas = dev.cublas_handle();
    // SAFETY: the pointers come from live device buffers of this stream (the
    // guards above keep them), and the shapes, leading dimensions and batch
    // strides below were checked against the buffers by the calling op.
    unsafe {
        cublas_result::gemm_strided_batched_ex(
            *blas.handle(),
            op(bm.transposed),
            op(am.transposed),
            int(n, "n")?,
            int(m, "m")?,
            int(k, "k")?,
            (&alpha) as *const f32 as *const _,
            (pb + bm.offset as u64 * b.element_bytes()) as *const _,
            b.dtype(),
            int(bm.ld, "ldb")?,
            bm.batch_stride as i64,
            (pa + am.offset as u64 * a.element_bytes()) as *const _,
            a.dtype(),
            int(am.ld, "lda")?,
            am.batch_stride as i64,
            (&beta) as *const f32 as *const _,
            (pc + cm.offset as u64 * 4) as *mut _,
            cublas_sys::cudaDataType::CUDA_R_32F,
            int(cm.ld, "ldc")?,
            cm.batch_stride as i64,
            int(batch, "batch")?,
            cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| candle_core::Error::Msg(format!("cublas gemm {m}x{n}x{k} (batch {batch}): {e:?}")))
}

/// Column sums of a row-major `[rows, cols]` buffer, in two deterministic
/// passes (`column_partials`, `column_reduce`).
pub(crate) fn column_sums(dev: &CudaDevice, x: &CudaView<'_, f32>, rows: usize, cols: usize) -> Result<CudaSlice<f32>> {
    if rows == 0 {
        return dev.alloc_zeros::<f32>(cols.max(1));
    }
    let (chunks, per_chunk) = column_chunks(rows);
    let mut partial = alloc(dev, chunks * cols)?;
    let out = alloc(dev, cols)?;
    let (rows64, cols32, per64, chunks32) = (rows as i64, int(cols, "cols")?, per_chunk as i64, int(chunks, "chunks")?);
    let f = func(dev, Module::Linear, "column_partials")?;
    let mut b = f.builder();
    b.arg(x);
    b.arg(&mut partial);
    b.arg(&rows64);
    b.arg(&cols32);
    b.arg(&per64);
    let cfg = LaunchConfig { grid_dim: ((cols as u32).div_ceil(THREADS), chunks as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: x holds rows × cols floats, partial chunks × cols; the kernel
    // checks its column and row bounds.
    unsafe { b.launch(cfg) }.w()?;
    let f = func(dev, Module::Linear, "column_reduce")?;
    let mut b = f.builder();
    b.arg(&partial);
    b.arg(&out);
    b.arg(&chunks32);
    b.arg(&cols32);
    let cfg = LaunchConfig { grid_dim: ((cols as u32).div_ceil(THREADS), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: partial holds chunks × cols floats, out cols.
    unsafe { b.launch(cfg) }.w()?;
    Ok(out)
}
