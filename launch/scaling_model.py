#!/usr/bin/env python3
"""Scaling model of the data-parallel trainer: fits an allreduce's latency (alpha) and bandwidth
(beta) to `bench allreduce --floats` timings, then predicts the step time and weak-scaling
efficiency of larger configs on 1-256 nodes over 10, 25 and 100 Gb/s links, and plots the points
measured on this machine against the model.

    python3 launch/scaling_model.py docs/scaling [--plot docs/scaling.png] [--markdown]

Inputs in the folder (written by launch/bench-scaling.sh):
  allreduce-*.jsonl   one JSON per size: {"ranks", "floats", "bytes", "seconds"} (a fit per file)
  steps.jsonl         `bench step` lines: {"config", "parameters", "step_seconds", "batch", ...}
  measured.json       {"lm-debug": [{"ranks", "step_s", "compute_s", "comm_s", "sync_s"}, ...]}

The model (one rank per node, ring allreduce of the fp32 gradient, fixed batch per node):
  t_comm(N) = 2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) * alpha
  exposed(N) = t_comm - min(overlap * t_comm, backward share * t_compute)
  t_step(N)  = t_compute + exposed(N),  efficiency = t_compute / t_step(N)
where `overlap` is the fraction of the sync that backward hid in the measured lm-debug runs.
"""
import argparse, glob, json, math, os, sys

LINKS_GBPS = [10, 25, 100]
NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
BACKWARD_SHARE = 2 / 3  # backward is about twice the forward's FLOPs
# Per-node batch of the weak-scaling predictions: each config's own global batch.
RECIPE_BATCH = {"lm-wt103-small": 96, "lm-wt103-medium": 56}
# DeiT-tiny (not measurable with `bench step`, which runs language models): parameters of our
# layout (patch 16, 192 wide, 12 layers, 1000 classes) and 3 x 1.25 GMAC x 2 FLOPs per image,
# run at the model GFLOP/s that `bench step` measured for lm-debug (its FLOP count is exact for a
# full softmax output; for the adaptive softmax of the WikiText-103 models it counts the whole
# vocabulary and overstates their rate).
DEIT = {"name": "deit-tiny-imagenet", "parameters": 5_717_428, "flops_per_image": 3 * 2.5e9, "batch": 1024}


def fit(points):
    """Latency from the smallest size, t = 2 (N - 1) alpha; bandwidth from the least-squares slope
    of t against bytes over all sizes (which the large ones dominate), slope = 2 (N - 1) / N / bw."""
    n = points[0]["ranks"]
    xs = [p["bytes"] for p in points]
    ys = [p["seconds"] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    smallest = min(points, key=lambda p: p["bytes"])
    return {"ranks": n, "alpha": smallest["seconds"] / (2 * (n - 1)), "bandwidth": 2 * (n - 1) / n / b}


def ring_seconds(nodes, nbytes, alpha, bandwidth):
    if nodes == 1:
        return 0.0
    return 2 * (nodes - 1) / nodes * nbytes / bandwidth + 2 * (nodes - 1) * alpha


def step_seconds(nodes, compute, nbytes, alpha, bandwidth, overlap):
    comm = ring_seconds(nodes, nbytes, alpha, bandwidth)
    hidden = min(overlap * comm, BACKWARD_SHARE * compute)
    return compute + comm - hidden


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def load(folder):
    fits = {}
    for path in sorted(glob.glob(os.path.join(folder, "allreduce-*.jsonl"))):
        pts = read_jsonl(path)
        if len(pts) >= 2:
            fits[os.path.basename(path)[len("allreduce-"):-len(".jsonl")]] = fit(pts)
    steps = {os.path.basename(s["config"]).replace(".yaml", ""): s
             for s in read_jsonl(os.path.join(folder, "steps.jsonl"))}
    with open(os.path.join(folder, "measured.json")) as f:
        measured = json.load(f)
    for name, batch in RECIPE_BATCH.items():
        if name in steps:
            s = steps[name]
            s["node_batch"], s["node_step_seconds"] = batch, s["step_seconds"] * batch / s["batch"]
    if "lm-debug" in steps:
        rate = steps["lm-debug"]["model_gflops"] * 1e9
        steps[DEIT["name"]] = {"parameters": DEIT["parameters"], "node_batch": DEIT["batch"], "estimated": True,
                               "node_step_seconds": DEIT["batch"] * DEIT["flops_per_image"] / rate}
    return fits, steps, measured


def overlap_fraction(measured):
    """Share of the gradient sync that backward hid, over the multi-rank lm-debug runs."""
    fr = [1 - r["comm_s"] / r["sync_s"] for r in measured.get("lm-debug", []) if r["ranks"] > 1 and r["sync_s"] > 0]
    return min(max(sorted(fr)[len(fr) // 2], 0.0), 1.0) if fr else 0.0


def predictions(steps, alpha, overlap, speedup):
    rows = []
    for name, s in steps.items():
        if "node_step_seconds" not in s:
            continue
        nbytes = 4 * s["parameters"]
        compute = s["node_step_seconds"] / speedup
        for gbps in LINKS_GBPS:
            bw = gbps * 1e9 / 8
            for n in NODES:
                t = step_seconds(n, compute, nbytes, alpha, bw, overlap)
                rows.append({"model": name, "gbps": gbps, "nodes": n, "step_s": t, "efficiency": compute / t,
                             "comm_s": ring_seconds(n, nbytes, alpha, bw), "compute_s": compute})
    return rows


def markdown(fits, steps, overlap, alpha_net, tables):
    out = ["| fit | ranks | alpha (µs) | bandwidth (GB/s) |", "|---|---|---|---|"]
    for k, f in fits.items():
        out.append(f"| {k} | {f['ranks']} | {f['alpha'] * 1e6:.1f} | {f['bandwidth'] / 1e9:.2f} |")
    out += ["", f"overlap (share of the sync hidden by backward, lm-debug): {overlap:.2f}; "
            f"network alpha used: {alpha_net * 1e6:.1f} µs", ""]
    out += ["| model | parameters | gradient MB | per-node batch | compute s/step, this VM, 1 thread |",
            "|---|---|---|---|---|"]
    for name, s in steps.items():
        if "node_step_seconds" in s:
            how = " (estimated from FLOPs)" if s.get("estimated") else f" (measured at batch {s['batch']}, scaled)"
            out.append(f"| {name} | {s['parameters']:,} | {4 * s['parameters'] / 1e6:.1f} | {s['node_batch']} | "
                       f"{s['node_step_seconds']:.2f}{how} |")
    for title, rows in tables:
        out += ["", title, "", "| model | link | " + " | ".join(f"{n}" for n in NODES) + " |",
                "|---|---|" + "---|" * len(NODES)]
        for name in steps:
            for gbps in LINKS_GBPS:
                rs = [r for r in rows if r["model"] == name and r["gbps"] == gbps]
                if rs:
                    cells = " | ".join(f"{r['step_s']:.3g} s / {100 * r['efficiency']:.0f} %" for r in rs)
                    out.append(f"| {name} | {gbps} Gb/s | {cells} |")
    return "\n".join(out)


def plot(path, fits, steps, measured, overlap, alpha_net, tables):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    debug = steps.get("lm-debug")
    shm = fits.get("shm-n2")
    pts = measured.get("lm-debug", [])
    if debug and shm and pts:
        nbytes = 4 * debug["parameters"]
        ns = [1 + k / 10 for k in range(71)]
        for key, style, label in (("shm-n2", "-", "model, alpha/beta of 2 ranks"),
                                  ("shm-n4", "--", "model, alpha/beta of 4 ranks (oversubscribed)")):
            if key in fits:
                f = fits[key]
                ax.plot(ns, [ring_seconds(n, nbytes, f["alpha"], f["bandwidth"]) * 1e3 for n in ns], style, label=label)
        multi = [p for p in pts if p["ranks"] > 1]
        ax.plot([p["ranks"] for p in multi], [p["sync_s"] * 1e3 for p in multi], "x",
                label="measured bucketed sync alone")
        ax.plot([p["ranks"] for p in multi], [p["comm_s"] * 1e3 for p in multi], "o",
                label="measured exposed comm per training step")
        ax.set_xlabel("ranks (one core each; more than 2 are oversubscribed)")
        ax.set_ylabel("ms")
        ax.set_title(f"lm-debug gradient sync ({nbytes / 1e6:.2f} MB) on this 2-core VM")
        ax.legend(fontsize=8)
    ax = axes[1]
    title, rows = tables[0]
    for name in steps:
        for gbps, style in zip(LINKS_GBPS, [":", "--", "-"]):
            rs = [r for r in rows if r["model"] == name and r["gbps"] == gbps]
            if rs:
                ax.plot([r["nodes"] for r in rs], [100 * r["efficiency"] for r in rs], style,
                        label=f"{name}, {gbps} Gb/s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("nodes")
    ax.set_ylabel("weak-scaling efficiency (%)")
    ax.set_title(title.replace("**", "").replace(" (step time / efficiency)", ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--plot")
    ap.add_argument("--speedup", type=float, default=32,
                    help="compute speed of a cluster node relative to this VM (second table)")
    args = ap.parse_args()
    fits, steps, measured = load(args.folder)
    overlap = overlap_fraction(measured)
    net = fits.get("tcp-n2")
    alpha_net = net["alpha"] if net else 25e-6
    tables = [(f"**Node = this 2-core VM** (step time / efficiency)",
               predictions(steps, alpha_net, overlap, 1)),
              (f"**Node = {args.speedup:g}x this VM's compute** (step time / efficiency)",
               predictions(steps, alpha_net, overlap, args.speedup))]
    print(markdown(fits, steps, overlap, alpha_net, tables))
    if args.plot:
        plot(args.plot, fits, steps, measured, overlap, alpha_net, tables[1:] + tables[:1])


if __name__ == "__main__":
    sys.exit(main())
