#!/usr/bin/env python3
"""Writes the study report (launch/study.sh runs it): perplexities of every variant and seed,
mean and spread; per-layer head redundancy (mean pairwise distance between the heads' attention
maps, higher = less redundant), attention entropy, row-sum health and learned R, averaged over
seeds; loss/perplexity curves; heat maps of the last layer.

    python3 launch/study_report.py CONFIG OUT SEED [SEED ...]
"""
import json, os, shutil, statistics, subprocess, sys

config, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
name = os.path.splitext(os.path.basename(config))[0]
binary = os.environ.get("SWIFT_FF_TRAIN", ".build/release/swift-ff-train")
variants = [("fourier", "Fourier, R init from the config"), ("softmax", "softmax twin"),
            ("fourier-r0.5", "Fourier, R init 0.5")]


def picture(svg, base):
    """Copies an SVG into the report folder as PNG (rsvg-convert) or as is; returns its name."""
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", svg, "-o", os.path.join(out, base + ".png")], check=True)
        return base + ".png"
    shutil.copy(svg, os.path.join(out, base + ".svg"))
    return base + ".svg"


def run_dir(v, s):
    return f"runs/study/{name}-{v}-s{s}"


# A variant enters the report when every seed of it finished (summary and analysis written).
variants = [(v, label) for v, label in variants
            if all(os.path.exists(os.path.join(run_dir(v, s), f)) for s in seeds
                   for f in ("summary.json", "analysis/analysis.json"))]
if not any(v == "fourier" for v, _ in variants) or not any(v == "softmax" for v, _ in variants):
    sys.exit("study_report: the fourier and softmax runs of every seed must be finished")


def load(v, s, f):
    with open(os.path.join(run_dir(v, s), f)) as fh:
        return json.load(fh)


def spread(xs):
    m = statistics.mean(xs)
    return f"{m:.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{m:.2f}"


lines = [f"# {name}: FourierFormer against its softmax twin, {len(seeds)} seed(s)", ""]
lines += [f"Written by `launch/study.sh {config} \"{' '.join(seeds)}\" {out}` (runs in `runs/study/`). "
          "Every variant trains for the config's steps on the same data with the same seeds; "
          "perplexity is on independent segments of the context length (the paper's protocol). "
          "The attention figures are from `swift-ff-train analyze` on 8 validation segments.", ""]
lines += ["## Perplexity", "", "| variant | valid (mean ± sd) | test (mean ± sd) | per seed: valid / test | tokens/s |",
          "|---|---|---|---|---|"]
summaries = {}
for v, label in variants:
    rows = [load(v, s, "summary.json") for s in seeds]
    summaries[v] = rows
    per = ", ".join(f"{r['valid']['perplexity']:.1f} / {r['test']['perplexity']:.1f}" for r in rows)
    tps = statistics.mean(r["tokens_per_s"] for r in rows)
    lines.append(f"| {label} | {spread([r['valid']['perplexity'] for r in rows])} | "
                 f"{spread([r['test']['perplexity'] for r in rows])} | {per} | {tps:.0f} |")
u = summaries["fourier"][0]
lines += ["", f"Unigram baseline: valid {u['valid']['unigram_perplexity']:.1f}, test {u['test']['unigram_perplexity']:.1f}.", ""]

lines += ["## Attention, per layer (means over seeds and heads)", "",
          "| layer | variant | head distance (higher = less redundant) | entropy (nats) | mean Σ_j A | collapsed rows | R |",
          "|---|---|---|---|---|---|---|"]
reports = {v: [load(v, s, "analysis/analysis.json") for s in seeds] for v, _ in variants}
layers = len(reports["fourier"][0]["layers"])
for l in range(layers):
    for v, label in variants:
        ls = [r["layers"][l] for r in reports[v]]
        dist = statistics.mean(x["mean_pairwise_head_distance"] for x in ls)
        ent = statistics.mean(h["entropy"] for x in ls for h in x["heads"])
        rs = statistics.mean(h["mean_row_sum"] for x in ls for h in x["heads"])
        col = statistics.mean(h["collapsed_rows"] for x in ls for h in x["heads"])
        rv = [r for x in ls for r in x["R"]]
        rtxt = f"{statistics.mean(rv):.3f}" if rv else "–"
        lines.append(f"| {l} | {label} | {dist:.3f} | {ent:.2f} | {rs:.3f} | {100 * col:.0f}% | {rtxt} |")

os.makedirs(out, exist_ok=True)
curves = os.path.join(out, f"{name}-curves.svg")
subprocess.run([binary, "plot"] + [run_dir(v, seeds[0]) for v, _ in variants] +
               ["--output", curves, "--title", f"{name}, seed {seeds[0]}"], check=True, stdout=subprocess.DEVNULL)
lines += ["", "## Curves (first seed)", "", f"![training loss and validation perplexity]({os.path.basename(curves)})", ""]
lines += ["## Per-layer bar charts (first seed)", ""]
for v, label in variants:
    svg = os.path.join(run_dir(v, seeds[0]), "analysis", "layers.svg")
    if not os.path.exists(svg):
        continue
    pic = picture(svg, f"{name}-layers-{v}")
    lines += [f"{label}:", "", f"![{label}, per layer]({pic})", ""]
lines += ["## Heat maps of the last layer (first seed, first validation segment; darker = more weight)", ""]
for v, label in variants:
    svg = os.path.join(run_dir(v, seeds[0]), "analysis", f"attention-layer{layers - 1}.svg")
    pic = picture(svg, f"{name}-attention-layer{layers - 1}-{v}")
    lines += [f"{label}:", "", f"![{label}]({pic})", ""]
report = os.path.join(out, f"{name}.md")
# Notes written by hand below the marker survive regeneration.
marker = "<!-- notes: kept when the report is regenerated -->"
kept = ""
if os.path.exists(report):
    with open(report) as fh:
        old = fh.read()
    if marker in old:
        kept = old[old.index(marker) + len(marker):]
with open(report, "w") as fh:
    fh.write("\n".join(lines) + "\n" + marker + kept)
print(f"wrote {report}")
