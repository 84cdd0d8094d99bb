#!/usr/bin/env python3
"""Writes the report of one study config (launch/study.sh runs it): for each variant — Fourier
with R from the data (the default), Fourier with the paper's R init, the softmax twin — the
valid/test perplexity (bits per byte for byte-level models, top-1 for ViTs) as mean ± sd over
seeds; the final attention row-sum of every layer for every seed; per layer head redundancy,
entropy, row health and R from `swift-ff-train analyze`; plots of how the health of every layer
evolves during training (from metrics.jsonl); loss curves and heat maps.

    python3 launch/study_report.py CONFIG OUT SEED [SEED ...]
"""
import json, math, os, shutil, statistics, subprocess, sys

config, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
name = os.path.splitext(os.path.basename(config))[0]
binary = os.environ.get("SWIFT_FF_TRAIN", ".build/release/swift-ff-train")
with open(config) as fh:
    text = fh.read()
vit = "kind: vit" in text
paper_r = "1.0" if vit else "2.0"
variants = [("fourier", "Fourier, R from the data (default)"),
            ("fourier-paper", f"Fourier, the paper's R init {paper_r}"),
            ("softmax", "softmax twin")]


def run_dir(v, s):
    return f"runs/study/{name}-{v}-s{s}"


def load(v, s, f):
    with open(os.path.join(run_dir(v, s), f)) as fh:
        return json.load(fh)


def metrics(v, s):
    with open(os.path.join(run_dir(v, s), "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh if line.strip()]


# Extra variants with another r_target (launch/study.sh's TARGETS), after the default.
extra = sorted({d[len(name) + len("-fourier-t"):].rsplit("-s", 1)[0] for d in os.listdir("runs/study")
                if d.startswith(f"{name}-fourier-t") and os.path.isdir(os.path.join("runs/study", d))})
variants[1:1] = [(f"fourier-t{t}", f"Fourier, R from the data with r_target {t}") for t in extra]
# A variant enters the report when every seed of it finished (summary and analysis written).
variants = [(v, label) for v, label in variants
            if all(os.path.exists(os.path.join(run_dir(v, s), f)) for s in seeds
                   for f in ("summary.json", "analysis/analysis.json"))]
if len(variants) < 2:
    sys.exit(f"study_report: {name}: fewer than two variants have finished every seed")
byte_level = False
if not vit:
    data_dir = next((l.split(":", 1)[1].split("#")[0].strip() for l in text.splitlines()
                     if l.strip().startswith("dir:") and "data" in l), "")
    try:
        with open(os.path.join(data_dir, "vocab.json")) as fh:
            byte_level = json.load(fh).get("tokenizer") == "byte"
    except OSError:
        pass


def spread(xs, fmt="{:.2f}"):
    m = statistics.mean(xs)
    return (fmt + " ± " + fmt).format(m, statistics.stdev(xs)) if len(xs) > 1 else fmt.format(m)


summaries = {v: [load(v, s, "summary.json") for s in seeds] for v, _ in variants}
lines = [f"# {name}: FourierFormer against its softmax twin over {len(seeds)} seeds", ""]
lines += [f"Written by `launch/study.sh {config}` with SEEDS=\"{' '.join(seeds)}\" (runs in `runs/study/`). "
          "Every variant trains for the config's steps on the same data with the same seeds, one thread per run. "
          + ("Top-1 accuracy is on the held-out valid split and the 10,000 test images. " if vit else
             "Perplexity is on independent segments of the context length (the paper's protocol). ")
          + "The per-layer figures are from `swift-ff-train analyze` on 8 validation samples.", ""]

if vit:
    lines += ["## Accuracy", "", "| variant | valid top-1 % (mean ± sd) | test top-1 % (mean ± sd) | per seed: test | images/s |",
              "|---|---|---|---|---|"]
    for v, label in variants:
        rows = summaries[v]
        per = ", ".join(f"{100 * r['test']['top1']:.2f}" for r in rows)
        lines.append(f"| {label} | {spread([100 * r['valid']['top1'] for r in rows])} | "
                     f"{spread([100 * r['test']['top1'] for r in rows])} | {per} | "
                     f"{statistics.mean(r['images_per_s'] for r in rows):.0f} |")
else:
    unit = "bits per byte" if byte_level else "perplexity"
    value = (lambda e: e["loss"] / math.log(2)) if byte_level else (lambda e: e["perplexity"])
    fmt = "{:.3f}" if byte_level else "{:.2f}"
    lines += [f"## {unit.capitalize()}", "",
              f"| variant | valid {unit} (mean ± sd) | test {unit} (mean ± sd) | per seed: valid / test | tokens/s |",
              "|---|---|---|---|---|"]
    for v, label in variants:
        rows = summaries[v]
        per = ", ".join((fmt + " / " + fmt).format(value(r["valid"]), value(r["test"])) for r in rows)
        lines.append(f"| {label} | {spread([value(r['valid']) for r in rows], fmt)} | "
                     f"{spread([value(r['test']) for r in rows], fmt)} | {per} | "
                     f"{statistics.mean(r['tokens_per_s'] for r in rows):.0f} |")
    u = summaries[variants[0][0]][0]
    if byte_level:
        lines += ["", f"Unigram baseline: valid {math.log2(u['valid']['unigram_perplexity']):.3f}, "
                      f"test {math.log2(u['test']['unigram_perplexity']):.3f} bits per byte."]
    else:
        lines += ["", f"Unigram baseline: valid {u['valid']['unigram_perplexity']:.1f}, "
                      f"test {u['test']['unigram_perplexity']:.1f}."]
lines += [""]

# Final training row-sum of A per layer (the progress line's `attn row-sum` at the last step).
fourier = [(v, label) for v, label in variants if v.startswith("fourier")]
lines += ["## Attention health at the end of training", "",
          "Mean row-sum of A per layer at the last step (1 = healthy; a collapsed row has Σ_j A ≈ 0), "
          "and the first logged step at which half of a layer's rows were collapsed (Σ_j W < eps).", "",
          "| variant | seed | final row-sum per layer | lowest | rows die (step per layer) |", "|---|---|---|---|---|"]
for v, label in fourier:
    for s in seeds:
        steps = [m for m in metrics(v, s) if "attn_row_sum" in m]
        final = steps[-1]["attn_row_sum"]
        died = []
        for l in range(len(final)):
            first = next((m["step"] for m in steps if m.get("attn_health") and m["attn_health"][l]["collapsed"] >= 0.5), None)
            died.append(str(first) if first else "–")
        lines.append(f"| {label} | {s} | {' / '.join(f'{x:.3f}' for x in final)} | {min(final):.3f} | {' / '.join(died)} |")
lines += [""]

lines += ["## Attention, per layer (means over seeds and heads)", "",
          "| layer | variant | head distance (higher = less redundant) | entropy (nats) | mean Σ_j A | collapsed rows | R |",
          "|---|---|---|---|---|---|---|"]
reports = {v: [load(v, s, "analysis/analysis.json") for s in seeds] for v, _ in variants}
layers = len(reports[variants[0][0]][0]["layers"])
for l in range(layers):
    for v, label in variants:
        ls = [r["layers"][l] for r in reports[v]]
        dist = [x["mean_pairwise_head_distance"] for x in ls]
        ent = statistics.mean(h["entropy"] for x in ls for h in x["heads"])
        rs = statistics.mean(h["mean_row_sum"] for x in ls for h in x["heads"])
        col = statistics.mean(h["collapsed_rows"] for x in ls for h in x["heads"])
        rv = [r for x in ls for r in x["R"]]
        rtxt = f"{statistics.mean(rv):.3f}" if rv else "–"
        lines.append(f"| {l} | {label} | {spread(dist, '{:.3f}')} | {ent:.2f} | {rs:.3f} | {100 * col:.0f}% | {rtxt} |")
lines += [""]

os.makedirs(out, exist_ok=True)


def health_plot(path):
    """Six panels over training steps, one line per layer, first seed: row-sum, collapsed rows,
    the median of R·|q_d − k_d|, R, and the norms of q and k; solid = R from the data, dashed =
    the paper's init."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    panels = [("row_sum", "mean Σ_j A (row-sum)"), ("collapsed", "fraction of rows collapsed"),
              ("u50", "median R·|q_d − k_d|"), ("r", "R"), ("q_norm", "‖q‖ per head (RMS)"),
              ("k_norm", "‖k‖ per head (RMS)")]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (key, title), ax in zip(panels, axes.flat):
        for v, label in fourier:
            ms = [m for m in metrics(v, seeds[0]) if m.get("attn_health")]
            if v not in ("fourier", "fourier-paper"):
                continue
            style = "-" if v == "fourier" else "--"
            for l in range(layers):
                ax.plot([m["step"] for m in ms], [m["attn_health"][l][key] for m in ms], style,
                        color=colours[l % len(colours)], label=f"layer {l}, {label}")
        ax.set_title(title); ax.set_xlabel("step")
        if key == "u50":
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{name}, seed {seeds[0]}: solid = R from the data, dashed = the paper's R init {paper_r}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def picture(svg, base):
    """Copies an SVG into the report folder as PNG (rsvg-convert) or as is; returns its name."""
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", svg, "-o", os.path.join(out, base + ".png")], check=True)
        return base + ".png"
    shutil.copy(svg, os.path.join(out, base + ".svg"))
    return base + ".svg"


if any(v == "fourier-paper" for v, _ in fourier):
    try:
        health_plot(os.path.join(out, f"{name}-health.png"))
        lines += ["## How the health of each layer evolves (first seed)", "",
                  f"![row-sum, collapsed rows, median R|q-k|, R and the norms of q and k per layer over training]({name}-health.png)", ""]
    except ImportError:
        print("study_report: matplotlib missing, no health plot (pip install matplotlib)")
curves = os.path.join(out, f"{name}-curves.svg")
subprocess.run([binary, "plot"] + [run_dir(v, seeds[0]) for v, _ in variants] +
               ["--output", curves, "--title", f"{name}, seed {seeds[0]}"], check=True, stdout=subprocess.DEVNULL)
lines += ["## Curves (first seed)", "", f"![training loss and validation metric]({os.path.basename(curves)})", ""]
lines += ["## Heat maps of the last layer (first seed, first validation sample; darker = more weight)", ""]
for v, label in variants:
    svg = os.path.join(run_dir(v, seeds[0]), "analysis", f"attention-layer{layers - 1}.svg")
    pic = picture(svg, f"{name}-attention-layer{layers - 1}-{v}")
    lines += [f"{label}:", "", f"![{label}]({pic})", ""]
report = os.path.join(out, f"{name}.md")
# Notes written by hand below the marker survive regeneration.
marker = "<!-- notes: kept when the report is regenerated -->"
kept = "\n"
if os.path.exists(report):
    with open(report) as fh:
        old = fh.read()
    if marker in old:
        kept = old[old.index(marker) + len(marker):]
with open(report, "w") as fh:
    fh.write("\n".join(lines) + "\n" + marker + kept)
print(f"wrote {report}")
