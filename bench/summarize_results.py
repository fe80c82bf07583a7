#!/usr/bin/env python3
"""Tables for docs/RESULTS.md from a bench/fmnist_results.sh output folder.

    python3 bench/summarize_results.py runs/results > tables.md
    python3 bench/summarize_results.py runs/results-photos "the 2,025 photo-corpus test crops"

Mean ± sample std over the seeds present (n is shown); top-1 in percent.
Also writes ROOT/mean/{arm}-{ft,lp}.json: the means in `srmae eval`'s
eval.json layout (plus "std" and "seeds"), which `srmae plot` draws with
error bars. Then the checks the protocol asks for: fine-tuned against the
linear probe and pretrained against scratch (per arm, every resolution),
SRMAE against MAE at the lowest resolution (mean difference, per-seed paired
differences, and the seed spread), and the fine-tuning runs' held-out
validation curves (mean over seeds), to show whether the budget converged.
"""
import glob
import json
import os
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(values):
    if not values:
        return "—"
    m = statistics.mean(values)
    if len(values) == 1:
        return f"{m:.2f}"
    return f"{m:.2f} ± {statistics.stdev(values):.2f}"


def main(root, test_set="the 10,000 Fashion-MNIST test images"):
    seeds = sorted(d for d in glob.glob(os.path.join(root, "seed*")) if os.path.isdir(d))
    found = {os.path.basename(d).rsplit("-ft-", 1)[0] for s in seeds for d in glob.glob(os.path.join(s, "*-ft-*"))}
    arms = [a for a in ["srmae", "srmae-pe", "srmae-pe-notype", "srmae-pe-nearest", "mae", "scratch"] if a in found]
    arms += sorted(found - set(arms))
    res_set = set()
    table = {}  # (arm, protocol, res) -> [top1]
    for s in seeds:
        for arm in arms:
            for proto, sub in (("fine-tune", f"{arm}-ft-full"), ("linear probe", f"{arm}-lp"), ("fine-tune at low res", f"{arm}-ft-vlr")):
                ev = load(os.path.join(s, sub, "eval.json"))
                if not ev:
                    continue
                for r in ev["results"]:
                    res_set.add(r["res"])
                    table.setdefault((arm, proto, r["res"]), []).append(r["top1"])
    res = sorted(res_set, reverse=True)
    print(f"Seeds: {len(seeds)}. Top-1 (%) on {test_set}.\n")
    print("| arm | protocol | " + " | ".join(f"{r} px" for r in res) + " |")
    print("|---|---|" + "---:|" * len(res))
    for proto in ("fine-tune", "linear probe", "fine-tune at low res"):
        for arm in arms:
            cells = [fmt(table.get((arm, proto, r), [])) for r in res]
            if all(c == "—" for c in cells):
                continue
            print(f"| {arm} | {proto} | " + " | ".join(cells) + " |")
    os.makedirs(os.path.join(root, "mean"), exist_ok=True)
    for arm in arms:
        for proto, short in (("fine-tune", "ft"), ("linear probe", "lp")):
            rows = [{"res": r, "top1": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "seeds": len(v)}
                    for r in res for v in [table.get((arm, proto, r), [])] if v]
            if rows:
                with open(os.path.join(root, "mean", f"{arm}-{short}.json"), "w") as f:
                    json.dump({"protocol": proto, "arm": arm, "results": rows}, f, indent=1)
    checks(seeds, arms, res, table)
    curves(seeds, arms)
    psnr = [load(os.path.join(s, "srmae-pre", "psnr", "sr_quality.json")) for s in seeds]
    psnr = [p for p in psnr if p]
    if psnr:
        print("\nSR head quality, clue patches of held-out images (PSNR, dB):\n")
        print("| model (SR head) | bicubic upsampling of the clues | nearest (the head's global residual) | images |")
        print("|---:|---:|---:|---:|")
        print(f"| {fmt([p['psnr_model'] for p in psnr])} | {fmt([p['psnr_bicubic'] for p in psnr])} | "
              f"{fmt([p['psnr_nearest'] for p in psnr])} | {psnr[0]['images']} |")
    abl = sorted(d for d in glob.glob(os.path.join(root, "ablations", "*")) if os.path.isdir(d))
    if abl:
        print("\nAblations (SRMAE variants, one seed; top-1 %, test set):\n")
        print("| variant | protocol | " + " | ".join(f"{r} px" for r in res) + " |")
        print("|---|---|" + "---:|" * len(res))
        base = [(os.path.basename(s) + " default", s, "srmae-ft-full", "srmae-lp") for s in seeds[:1]]
        rows = base + [(os.path.basename(d), d, "ft", "lp") for d in abl]
        for name, d, ft, lp in rows:
            for proto, sub in (("fine-tune", ft), ("linear probe", lp)):
                ev = load(os.path.join(d, sub, "eval.json"))
                if not ev:
                    continue
                by = {r["res"]: r["top1"] for r in ev["results"]}
                print(f"| {name} | {proto} | " + " | ".join(f"{by[r]:.2f}" if r in by else "—" for r in res) + " |")
    times = os.path.join(root, "times.jsonl")
    if os.path.exists(times):
        total = {}
        for line in open(times):
            t = json.loads(line)
            key = t["run"].split("-", 1)[1] if t["run"].startswith("seed") else t["run"]
            total.setdefault(key, []).append(t["seconds"])
        print("\nWall time per run (s, mean over seeds):\n")
        print("| run | seconds |\n|---|---:|")
        for k, v in total.items():
            print(f"| {k} | {statistics.mean(v):.0f} |")


def per_seed(seeds, sub, res):
    """{seed name: top-1 at res} for the runs of one arm and protocol."""
    out = {}
    for s in seeds:
        ev = load(os.path.join(s, sub, "eval.json"))
        if ev:
            by = {r["res"]: r["top1"] for r in ev["results"]}
            if res in by:
                out[os.path.basename(s)] = by[res]
    return out


def paired(seeds, a_sub, b_sub, res):
    """Per-seed differences a - b over the seeds both have."""
    a, b = per_seed(seeds, a_sub, res), per_seed(seeds, b_sub, res)
    return [a[k] - b[k] for k in sorted(a) if k in b]


def diff_cell(d):
    if not d:
        return "—"
    if len(d) == 1:
        return f"{d[0]:+.2f}"
    return f"{statistics.mean(d):+.2f} ± {statistics.stdev(d):.2f} ({sum(x > 0 for x in d)}/{len(d)} seeds > 0)"


def checks(seeds, arms, res, table):
    if not res:
        return
    print("\nChecks (per-seed paired differences, mean ± std, in points):\n")
    print("| check | " + " | ".join(f"{r} px" for r in res) + " |")
    print("|---|" + "---:|" * len(res))
    for arm in arms:
        if arm == "scratch":
            continue
        print(f"| {arm}: fine-tuned − linear probe | " + " | ".join(diff_cell(paired(seeds, f"{arm}-ft-full", f"{arm}-lp", r)) for r in res) + " |")
    for arm in arms:
        if arm == "scratch":
            continue
        print(f"| {arm} − scratch, fine-tuned | " + " | ".join(diff_cell(paired(seeds, f"{arm}-ft-full", "scratch-ft-full", r)) for r in res) + " |")
    low = min(res)
    vlr = sorted({r for (arm, proto, r) in table if proto == "fine-tune at low res"})
    for arm in arms:
        if arm == "scratch":
            continue
        for r in vlr:
            print(f"| {arm} − scratch, fine-tuned and tested at {r} px (VLR) | " + " | ".join(diff_cell(paired(seeds, f"{arm}-ft-vlr", "scratch-ft-vlr", r)) if x == r else "" for x in res) + " |")
    for arm in arms:
        if arm in ("mae", "scratch"):
            continue
        cells = [diff_cell(paired(seeds, f"{arm}-ft-full", "mae-ft-full", r)) for r in res]
        print(f"| {arm} − mae, fine-tuned | " + " | ".join(cells) + " |")
        cells = [diff_cell(paired(seeds, f"{arm}-lp", "mae-lp", r)) for r in res]
        print(f"| {arm} − mae, linear probe | " + " | ".join(cells) + " |")
        for r in vlr:
            print(f"| {arm} − mae, fine-tuned and tested at {r} px (VLR) | " + " | ".join(diff_cell(paired(seeds, f"{arm}-ft-vlr", "mae-ft-vlr", r)) if x == r else "" for x in res) + " |")
    print(f"\nLowest resolution ({low} px) after fine-tuning: the seed spread (sample std) of each arm:",
          ", ".join(f"{arm} {statistics.stdev(v):.2f}" for arm in arms for v in [table.get((arm, "fine-tune", low), [])] if len(v) > 1) or "—")


def curves(seeds, arms):
    """Held-out validation top-1 by epoch of the fine-tuning at full resolution, mean over seeds."""
    rows = {}
    for arm in arms:
        by_epoch = {}
        for s in seeds:
            path = os.path.join(s, f"{arm}-ft-full", "metrics.jsonl")
            if not os.path.exists(path):
                continue
            for line in open(path):
                m = json.loads(line)
                if "epoch_end" in m and "eval" in m:
                    by_epoch.setdefault(m["epoch_end"], []).append(m["eval"]["top1"])
        if by_epoch:
            rows[arm] = by_epoch
    if not rows:
        return
    epochs = sorted({e for v in rows.values() for e in v})
    print("\nValidation curve of the fine-tuning (held-out split, top-1 %, mean over seeds) by epoch:\n")
    print("| arm | " + " | ".join(str(e) for e in epochs) + " |")
    print("|---|" + "---:|" * len(epochs))
    for arm, by_epoch in rows.items():
        print(f"| {arm} | " + " | ".join(f"{statistics.mean(by_epoch[e]):.1f}" if e in by_epoch else "—" for e in epochs) + " |")


if __name__ == "__main__":
    main(*(sys.argv[1:3] or ["runs/results"]))
