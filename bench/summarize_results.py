#!/usr/bin/env python3
"""Tables for docs/RESULTS.md from a bench/fmnist_results.sh output folder.

    python3 bench/summarize_results.py runs/results > tables.md
    python3 bench/summarize_results.py runs/results-photos "the 2,025 photo-corpus test crops"

Mean ± sample std over the seeds present (n is shown); top-1 in percent.
Also writes ROOT/mean/{arm}-{ft,lp}.json: the means in `srmae eval`'s
eval.json layout (plus "std" and "seeds"), which `srmae plot` draws.
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


if __name__ == "__main__":
    main(*(sys.argv[1:3] or ["runs/results"]))
