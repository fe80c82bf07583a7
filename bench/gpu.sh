#!/usr/bin/env bash
# bench/gpu.sh — the GPU benchmark of a prebuilt `srmae` (built with
# `--features cuda`, docs/GPU.md "Build"), on a GPU machine without a Rust
# toolchain. About 6 minutes on one H100/H200. Prints one JSON line per figure,
# saved in WORKDIR/gpu.jsonl and in bench/results/<gpu>-<date>/gpu.jsonl:
#
#   device          GPU name, memory, driver
#   selftest        `srmae selftest --device cuda`: every fused CUDA op forward and
#                   backward against the CPU reference, F32 and BF16 products (one
#                   `selftest_op` line per op and shape). When it passes, the rest
#                   runs with the fused CUDA ops (SRMAE_CUDA_OPS=fused); when it
#                   fails, with the composed path, and the script exits non-zero.
#   numerics        SRMAE ViT-Ti step on cuda vs cpu: loss and gradient norm agree
#   ops             `srmae bench ops`: forward / forward+backward time per block, ViT-B, BF16
#   synthetic_*     `srmae bench step`, BF16 autocast, for SRMAE and MAE at ViT-B/16
#                   (the largest batch <= BATCH that fits) and ViT-Ti/16: images/s,
#                   step time, GPU memory; beside each (pytorch_*) the same model in
#                   PyTorch eager (timm blocks, SDPA, torch.autocast bf16, same batch)
#                   and the ratios; SRMAE ViT-B/16 also at batch 64 (the memory
#                   ratio) and on the composed path (before)
#   synthetic_f32   SRMAE ViT-B/16 in F32 (what BF16 buys)
#   loader          `srmae pretrain` (imagenet-vitb16-pretrain recipe, BF16) fed by
#                   the loader from a packed JPEG photo corpus, all CPU cores:
#                   images/s, step time, data-wait %, GPU memory
#   bf16_vs_f32     loss curves of 60 steps in BF16 and in F32 on the corpus
#
# Usage:
#   bench/gpu.sh BIN [WORKDIR]
#     BIN      the srmae binary built with --features cuda
#     WORKDIR  scratch folder (default /tmp/srmae-gpu)
# Environment:
#   PYTHON     python with torch (+ Pillow for the corpus; default python3)
#   CORPUS_SRC folder of photographs for bench/make_corpus.py (default: scikit-image's
#              data folder, or Debian's wallpapers when scikit-image is absent)
#   BATCH      the largest batch to try (default 256)
#   SKIP       space-separated figures to skip (e.g. "pytorch composed bf16_vs_f32")
#   RESULTS    where the JSON lines are kept (default bench/results/<gpu>-<date>)
set -euo pipefail
fail=0
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(realpath "${1:?usage: bench/gpu.sh BIN [WORKDIR]}")"
WORK="${2:-/tmp/srmae-gpu}"
PY="${PYTHON:-python3}"
BATCH="${BATCH:-256}"
SKIP="${SKIP:-}"
RUN=("$HERE/scripts/cuda/run-with-cuda-libs.sh" "$BIN")
mkdir -p "$WORK"
OUT="$WORK/gpu.jsonl"
: > "$OUT"
emit() { echo "$1" | tee -a "$OUT"; }
skip() { [[ " $SKIP " == *" $1 "* ]]; }
log() { echo "[gpu.sh] $*" >&2; }

gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
emit "$("$PY" -c 'import json,sys; n,m,d=[s.strip() for s in sys.argv[1].split(",")]; print(json.dumps({"figure":"device","gpu":n,"memory":m,"driver":d,"cpu_cores":int(sys.argv[2])}))' "$gpu" "$(nproc)")"
slug="$(echo "${gpu%%,*}" | tr 'A-Z' 'a-z' | sed 's/nvidia //; s/[^a-z0-9]\+/-/g; s/-$//')"
RESULTS="${RESULTS:-$HERE/bench/results/$slug-$(date +%F)}"
trap 'mkdir -p "$RESULTS" && cp "$OUT" "$RESULTS/gpu.jsonl" && log "figures kept in $RESULTS/gpu.jsonl"' EXIT

# The fused CUDA ops run only once they have passed on this GPU.
export SRMAE_CUDA_OPS=composed
if ! skip selftest; then
  log "selftest: every fused CUDA op against the CPU reference"
  "${RUN[@]}" selftest --device cuda > "$WORK/selftest.jsonl" || true
  "$PY" - "$WORK/selftest.jsonl" >> "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in rows:
    print(json.dumps({"figure": "selftest_op", **r}))
bad = [r for r in rows if not r["pass"]]
print(json.dumps({"figure": "selftest", "checks": len(rows), "failed": len(bad),
                  "worst_rel_err": max((r["max_rel_err"] for r in rows), default=None),
                  "pass": bool(rows) and not bad}))
EOF
  tail -1 "$OUT"
  if tail -1 "$OUT" | grep -q '"pass": true'; then export SRMAE_CUDA_OPS=fused; else fail=1; log "selftest failed: the rest runs on the composed path"; fi
fi

# Peak GPU memory while a command runs (nvidia-smi, MiB).
watch_mem() { while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; done > "$1"; }
peak_gib() { sort -n "$1" | tail -1 | awk '{printf "%.2f", $1/1024}'; }

if ! skip numerics; then
  log "numerics: SRMAE ViT-Ti step, cuda vs cpu"
  if ! { "${RUN[@]}" bench step --model tiny --batch 4 --steps 1 --device cpu --check > "$WORK/num-cpu.json" &&
         "${RUN[@]}" bench step --model tiny --batch 4 --steps 1 --device cuda --check > "$WORK/num-gpu.json"; }; then
    emit '{"figure":"numerics","error":"bench step failed (see stderr)"}'
    fail=1
  else
  emit "$("$PY" - "$WORK/num-cpu.json" "$WORK/num-gpu.json" <<'EOF'
import json, sys
c, g = (json.load(open(p)) for p in sys.argv[1:3])
rel = lambda a, b: abs(a - b) / max(abs(a), 1e-12)
print(json.dumps({"figure": "numerics", "loss_cpu": c["first_loss"], "loss_gpu": g["first_loss"],
                  "grad_norm_cpu": c["first_grad_norm"], "grad_norm_gpu": g["first_grad_norm"],
                  "loss_rel_diff": rel(c["first_loss"], g["first_loss"]),
                  "grad_norm_rel_diff": rel(c["first_grad_norm"], g["first_grad_norm"]),
                  "pass": rel(c["first_loss"], g["first_loss"]) < 1e-3 and rel(c["first_grad_norm"], g["first_grad_norm"]) < 1e-2}))
EOF
)"
  fi
fi

if ! skip ops; then
  log "bench ops: ViT-B blocks, bf16, batch 64"
  "${RUN[@]}" bench ops --model base --device cuda --precision bf16 --batch 64 --reps 3 > "$WORK/ops.jsonl" || fail=1
  "$PY" -c 'import json,sys; [print(json.dumps({"figure": "ops", **json.loads(l)})) for l in open(sys.argv[1]) if l.startswith("{")]' "$WORK/ops.jsonl" | tee -a "$OUT"
fi

# ours FIGURE METHOD MODEL BATCH [fit] -> WORK/FIGURE.json (fit: the largest batch <= BATCH that fits)
ours() {
  local fig=$1 method=$2 model=$3 b=$4 fit=${5:-}
  until "${RUN[@]}" bench step --method "$method" --model "$model" --device cuda --precision bf16 --batch "$b" ${fit:+--fit} --steps 10 > "$WORK/$fig.json"; do
    [[ -n "$fit" ]] || return 1
    b=$((b / 2)); [[ $b -ge 1 ]] || return 1
    log "retrying at batch $b"   # an out-of-memory error in words --fit does not know
  done
}
# torch_peer FIGURE METHOD MODEL BATCH OURS_FIGURE: PyTorch eager, same model and batch, and the ratios
torch_peer() {
  local fig=$1 method=$2 model=$3 b=$4 mine=$5
  skip pytorch && return 0
  if "$PY" "$HERE/model/reference/bench_step.py" --method "$method" --model "$model" --device cuda --bf16 --batch "$b" --steps 10 --threads "$(nproc)" > "$WORK/$fig.json"; then
    emit "$("$PY" - "$WORK/$mine.json" "$WORK/$fig.json" "$fig" <<'EOF'
import json, sys
ours, torch = (json.load(open(p)) for p in sys.argv[1:3])
torch["figure"] = sys.argv[3]
torch["srmae_over_pytorch"] = ours["images_per_s"] / torch["images_per_s"]
if ours.get("gpu_mem_gib") and torch.get("gpu_mem_gib"):
    torch["srmae_mem_over_pytorch"] = ours["gpu_mem_gib"] / torch["gpu_mem_gib"]
print(json.dumps(torch))
EOF
)"
  else
    emit '{"figure":"'"$fig"'","error":"bench_step.py failed (is torch installed for '"$PY"'?)"}'
  fi
}
show() { emit "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["figure"]=sys.argv[2]; print(json.dumps(d))' "$WORK/$1.json" "$1")"; }

for spec in "srmae base $BATCH fit" "mae base $BATCH fit" "srmae tiny 256 fit" "mae tiny 256 fit"; do
  read -r method model b fit <<< "$spec"
  fig="synthetic_${method}_${model}"
  log "synthetic: $method $model, bf16, batch <= $b"
  if ! ours "$fig" "$method" "$model" "$b" "$fit"; then emit '{"figure":"'"$fig"'","error":"no batch fits"}'; fail=1; continue; fi
  show "$fig"
  bfit="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch"])' "$WORK/$fig.json")"
  torch_peer "pytorch_${method}_${model}" "$method" "$model" "$bfit" "$fig"
  if [[ "$fig" == synthetic_srmae_base ]]; then B="$bfit"; fi
done
B="${B:-64}"

log "memory at batch 64: SRMAE ViT-B/16, ours and PyTorch"
if ours synthetic_srmae_base_b64 srmae base 64; then show synthetic_srmae_base_b64; torch_peer pytorch_srmae_base_b64 srmae base 64 synthetic_srmae_base_b64; fi

if ! skip composed && [[ "$SRMAE_CUDA_OPS" == fused ]]; then
  log "before: SRMAE ViT-B/16 on the composed path, batch 64"
  if SRMAE_CUDA_OPS=composed ours synthetic_srmae_base_composed srmae base 64; then show synthetic_srmae_base_composed; fi
fi

if ! skip synthetic_f32; then
  log "synthetic: F32, batch $B"
  if "${RUN[@]}" bench step --model base --device cuda --precision f32 --batch "$B" --fit --steps 5 > "$WORK/syn32.json"; then
    emit "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["figure"]="synthetic_f32"; print(json.dumps(d))' "$WORK/syn32.json")"
  fi
fi

if ! skip loader || ! skip bf16_vs_f32; then
  SRC="${CORPUS_SRC:-$("$PY" -c 'import os, skimage; print(os.path.join(os.path.dirname(skimage.__file__), "data"))' 2>/dev/null || true)}"
  if [[ ! -d "$WORK/shards" ]]; then
    log "corpus from ${SRC:-Debian wallpapers} -> packed shards"
    rm -rf "$WORK/corpus"
    "$PY" "$HERE/bench/make_corpus.py" "$WORK/corpus" ${SRC:+--src "$SRC"} --train-per-class 150 --val-per-class 0 >&2
    "${RUN[@]}" pack "$WORK/corpus" "$WORK/shards" --split train >&2
  fi
fi

pretrain() { # OUT PRECISION BATCH STEPS
  rm -rf "$1"
  "${RUN[@]}" pretrain --recipe imagenet-vitb16-pretrain --data "$WORK/shards" --out "$1" --device cuda \
    --threads "$(nproc)" --set "run.precision=\"$2\"" --set optim.batch_size="$3" --set optim.accum_iter=1 --set optim.epochs=100 \
    --set run.log_every=5 --set optim.warmup_epochs=0 --stop-after "$4" >&2
}

if ! skip loader; then
  log "loader-fed pretraining, batch $B, all cores"
  watch_mem "$WORK/mem-loader.txt" & WATCH=$!
  ok=1; pretrain "$WORK/run-loader" bf16 "$B" 40 || ok=0
  kill "$WATCH" 2>/dev/null || true
  if [[ $ok == 0 ]]; then emit '{"figure":"loader","error":"pretrain failed (see stderr)"}'; fail=1; else
  emit "$("$PY" - "$WORK/run-loader/metrics.jsonl" "$B" "$(peak_gib "$WORK/mem-loader.txt")" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l]
steady = rows[2:] or rows                      # the first logs include start-up
ips = sum(r["images_per_s"] for r in steady) / len(steady)
wait = sum(r["data_wait_pct"] for r in steady) / len(steady)
b = int(sys.argv[2])
print(json.dumps({"figure": "loader", "model": "srmae vit_base_16 (imagenet-vitb16-pretrain)", "precision": "bf16",
                  "batch": b, "images_per_s": ips, "step_s": b / ips, "data_wait_pct": wait,
                  "gpu_mem_gib": float(sys.argv[3] or "nan"), "steps": rows[-1]["step"]}))
EOF
)"
  fi
fi

if ! skip bf16_vs_f32; then
  log "loss curves: bf16 vs f32, 60 steps at batch 64"
  if ! { pretrain "$WORK/run-bf16" bf16 64 60 && pretrain "$WORK/run-f32" f32 64 60; }; then
    emit '{"figure":"bf16_vs_f32","error":"pretrain failed (see stderr)"}'; fail=1
  else
  emit "$("$PY" - "$WORK/run-bf16/metrics.jsonl" "$WORK/run-f32/metrics.jsonl" <<'EOF'
import json, sys
curve = lambda p: [(r["step"], r["loss"]) for r in map(json.loads, open(p)) if "step" in r]
a, b = curve(sys.argv[1]), curve(sys.argv[2])
diff = max(abs(x[1] - y[1]) / abs(y[1]) for x, y in zip(a, b))
print(json.dumps({"figure": "bf16_vs_f32", "steps": [s for s, _ in a], "loss_bf16": [l for _, l in a],
                  "loss_f32": [l for _, l in b], "max_rel_diff": diff}))
EOF
)"
  fi
fi
log "done: $OUT"
exit "$fail"
