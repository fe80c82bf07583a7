#!/usr/bin/env bash
# bench/gpu.sh — the GPU benchmark of a prebuilt `srmae` (built with
# `--features cuda`, see README "GPU build"). Runs in about 6-8 minutes on one
# H100. Prints one JSON line per figure (also saved in WORKDIR/gpu.jsonl):
#
#   device          GPU name, memory, driver
#   numerics        SRMAE ViT-Ti step on cuda vs cpu: loss and gradient norm agree
#   synthetic       SRMAE ViT-B/16 at 224, BF16 autocast, the largest batch <= 256
#                   that fits: images/s, step time, GPU memory
#   synthetic_f32   the same in F32 (what BF16 buys)
#   pytorch         the same model in PyTorch eager (timm blocks when timm is
#                   installed, torch.autocast bf16, same batch), and the ratio
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
#   SKIP       space-separated figures to skip (e.g. "pytorch bf16_vs_f32")
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

log "synthetic: SRMAE ViT-B/16, bf16, batch <= $BATCH"
# --fit halves the batch on an out-of-memory error; should a library report the
# allocation failure in other words, the loop tries the smaller batches itself.
B="$BATCH"
until "${RUN[@]}" bench step --model base --device cuda --precision bf16 --batch "$B" --fit --steps 10 > "$WORK/syn.json"; do
  B=$((B / 2)); [[ $B -ge 1 ]] || { emit '{"figure":"synthetic","error":"no batch fits"}'; exit 1; }
  log "retrying at batch $B"
done
B="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch"])' "$WORK/syn.json")"
emit "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["figure"]="synthetic"; print(json.dumps(d))' "$WORK/syn.json")"

if ! skip synthetic_f32; then
  log "synthetic: F32, batch $B"
  if "${RUN[@]}" bench step --model base --device cuda --precision f32 --batch "$B" --fit --steps 5 > "$WORK/syn32.json"; then
    emit "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["figure"]="synthetic_f32"; print(json.dumps(d))' "$WORK/syn32.json")"
  fi
fi

if ! skip pytorch; then
  log "PyTorch eager, bf16 autocast, batch $B"
  if "$PY" "$HERE/model/reference/bench_step.py" --model base --device cuda --bf16 --batch "$B" --steps 10 --threads "$(nproc)" > "$WORK/torch.json"; then
    emit "$("$PY" - "$WORK/syn.json" "$WORK/torch.json" <<'EOF'
import json, sys
ours, torch = (json.load(open(p)) for p in sys.argv[1:3])
torch["figure"] = "pytorch"
torch["srmae_over_pytorch"] = ours["images_per_s"] / torch["images_per_s"]
print(json.dumps(torch))
EOF
)"
  else
    emit '{"figure":"pytorch","error":"bench_step.py failed (is torch installed for '"$PY"'?)"}'
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
