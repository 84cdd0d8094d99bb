#!/usr/bin/env python3
"""PyTorch baseline for swift-ff-train's speed claims (a benchmark, not a test).

The point is a fair, honest reference: the same model, written the way a PyTorch user would
write it from the formulas in the README ("The model"), so that "N x faster than PyTorch" means
something. Nothing here is tuned; the Fourier attention is deliberately the plain broadcast
formula (it materialises B x H x N x N x D), because that is what PyTorch gives you without a
custom kernel.

Subcommands (each prints one JSON line on stdout; notes go to stderr):
  attention       forward+backward of one attention call (fourier or softmax)
  train           optimizer steps of the LM of a swift-ff-train config, on random tokens
  check-weights   load an exported model.safetensors (strict) and print an eval loss
                  (also reachable as `--check-weights PATH`)

Set-up:  pip install torch==2.13.0 pyyaml numpy
Timing:  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python3 launch/bench_pytorch.py ...
         (glibc malloc hands PyTorch's large temporaries back to the kernel on free, so every
         step page-faults them in again; jemalloc keeps them. The script reports which it got.)
Examples:
  python3 launch/bench_pytorch.py attention --batch 8 --heads 8 --seq 256 --dim 16 --causal
  python3 launch/bench_pytorch.py attention --kind softmax --seq 256 --causal
  python3 launch/bench_pytorch.py train --config configs/lm-debug.yaml --steps 10 --threads 1
  python3 launch/bench_pytorch.py --check-weights runs/lm-debug/model.safetensors --config configs/lm-debug.yaml
"""

import argparse
import json
import math
import os
import resource
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def note(msg):
    print(f"bench_pytorch: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Environment: threads, allocator, memory
# ----------------------------------------------------------------------------------------------

def setup_threads(threads):
    # One inter-op thread: the models here are a single chain of ops, and a second pool would
    # only compete with the intra-op threads on a small machine. Must run before any parallel
    # work, hence first thing in main().
    torch.set_num_interop_threads(1)
    torch.set_num_threads(threads)


def jemalloc_loaded():
    # /proc/self/maps, not $LD_PRELOAD: it shows what the dynamic loader actually mapped
    # (a wrong path in LD_PRELOAD only prints a warning and silently falls back to glibc).
    try:
        with open("/proc/self/maps") as f:
            return any("jemalloc" in line for line in f)
    except OSError:
        return "jemalloc" in os.environ.get("LD_PRELOAD", "")


def report_allocator():
    ok = jemalloc_loaded()
    if ok:
        note("jemalloc: preloaded")
    else:
        hint = f"LD_PRELOAD={JEMALLOC}" if os.path.exists(JEMALLOC) else "apt-get install -y libjemalloc2"
        note(f"jemalloc: NOT preloaded (glibc malloc; timings will include page faults) -> {hint}")
    return ok


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakRSS:
    """Peak resident memory growth over a region, in MB.

    ru_maxrss is a high-water mark since process start, so a delta of it under-reports when an
    earlier phase (e.g. importing torch) peaked higher. Linux lets a process reset its own
    high-water mark (write 5 to /proc/self/clear_refs); we do that when allowed and fall back
    to the ru_maxrss delta otherwise. psutil is used by neither: it cannot reset the peak either.
    """

    def __enter__(self):
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base_kb = _status_kb("VmRSS")
            self.exact = True
        except (OSError, KeyError):
            self.base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if self.exact:
            peak_kb = _status_kb("VmHWM")
        else:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mb = max(0, peak_kb - self.base_kb) / 1024.0
        self.total_mb = peak_kb / 1024.0  # the process's peak during the region (exact method only)
        self.method = "VmHWM-reset" if self.exact else "ru_maxrss-delta"
        return False


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------

# How sinc is written: "special" (torch.special.sinc, PyTorch's own op) or "sin" (sin(u)/u with
# a guard at u = 0). Which is faster depends on the build; launch/bench-speed.sh times both and
# keeps PyTorch's better figure.
FOURIER_FORMULA = "special"


def sinc_of_u(u):
    """sin(u)/u, 1 at u = 0, written with elementwise ops (the gradient stays finite at 0)."""
    zero = u == 0
    safe = torch.where(zero, torch.ones_like(u), u)
    return torch.where(zero, torch.ones_like(u), torch.sin(safe) / safe)


def fourier_attention(q, k, v, R, r_mode="scalar", p=4, eps=1e-6, causal=True):
    """FourierFormer attention, the plain PyTorch way. q, k, v: (B, H, N, D).

    u[i,j,d] = R_d (q_id - k_jd); W = prod_d sinc(u)^p; causal mask after the power;
    A = W / (sum_j W + eps); O = A V. No 1/sqrt(D), no normalisation of q or k.
    """
    H = q.shape[1]
    if FOURIER_FORMULA == "sin":
        r = R.view(1, H, 1, 1, 1) if r_mode == "per_head" else R
        u = r * (q[:, :, :, None, :] - k[:, :, None, :, :])      # (B, H, N, N, D)
        W = sinc_of_u(u).prod(dim=-1) ** p                        # (B, H, N, N)
        if causal:
            N = q.shape[2]
            W = W * torch.ones(N, N, dtype=W.dtype, device=W.device).tril()
        return (W / (W.sum(dim=-1, keepdim=True) + eps)) @ v
    # torch.special.sinc is the normalised sinc, sin(pi x)/(pi x); folding 1/pi into R gives the
    # paper's sin(u)/u with PyTorch's own handling of u = 0 (value 1, gradient 0), and saves a pass
    # over the N x N x D tensor compared with dividing u by pi.
    if r_mode == "per_head":
        r = (R / math.pi).view(1, H, 1, 1, 1)
    else:
        r = R / math.pi  # [1] (scalar) or [D] (per_dim): both broadcast over the last axis
    diff = q[:, :, :, None, :] - k[:, :, None, :, :]          # (B, H, N, N, D)
    Y = torch.special.sinc(r * diff).prod(dim=-1)              # (B, H, N, N)
    W = Y ** p
    if causal:
        N = q.shape[2]
        W = W * torch.ones(N, N, dtype=W.dtype, device=W.device).tril()
    A = W / (W.sum(dim=-1, keepdim=True) + eps)
    return A @ v


def softmax_attention(q, k, v, causal=True):
    # PyTorch's fused CPU kernel (flash-style, no N x N buffer): the strongest softmax baseline
    # PyTorch offers, with the default 1/sqrt(D) scaling.
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def cmd_attention(args):
    global FOURIER_FORMULA
    FOURIER_FORMULA = args.formula
    jem = report_allocator()
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, args.heads, args.seq, args.dim)
    # q and k are drawn at --std (default 0.25 ~ 0.02 * sqrt(128), the scale of q and k at init in
    # the debug model). At std 1 with R = 2 and D = 16 most W = Y^4 are subnormal or 0 in fp32
    # (median row sum ~1e-12, far below eps): rows collapse to A ~ 0 and the timing would include
    # slow subnormal arithmetic that a trained model does not see. attn_row_sum_mean reports it.
    q = (torch.randn(shape, generator=g) * args.std).requires_grad_()
    k = (torch.randn(shape, generator=g) * args.std).requires_grad_()
    v = torch.randn(shape, generator=g).requires_grad_()
    upstream = torch.randn(shape, generator=g)
    R = torch.full([1], args.r_init, requires_grad=True)

    if args.kind == "fourier":
        def run():
            return fourier_attention(q, k, v, R, "scalar", args.p, args.eps, args.causal)
    else:
        def run():
            return softmax_attention(q, k, v, args.causal)

    def fwd_bwd():
        for t in (q, k, v, R):
            t.grad = None
        out = run()
        out.backward(upstream)
        return out

    # A tiny call first, the same way as the timed ones (an explicit upstream gradient: the first
    # such backward costs ~35 MB of one-off RSS, besides the library code paged in on first use),
    # so that peak_rss_mb below is the tensors' memory, not PyTorch's start-up.
    small = [t.detach()[:1, :1, :8].clone().requires_grad_() for t in (q, k, v)]
    if args.kind == "fourier":
        out = fourier_attention(*small, R, "scalar", args.p, args.eps, args.causal)
    else:
        out = softmax_attention(*small, args.causal)
    out.backward(torch.randn_like(out))
    del small, out
    R.grad = None

    times = []
    with PeakRSS() as mem:
        fwd_bwd()  # warm-up: first-touch of buffers, kernel selection
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fwd_bwd()
            times.append(time.perf_counter() - t0)

    result = {
        "kind": args.kind, "formula": args.formula if args.kind == "fourier" else None,
        "batch": args.batch, "heads": args.heads, "seq": args.seq,
        "dim": args.dim, "causal": args.causal, "threads": args.threads,
        "seconds_fwd_bwd": statistics.median(times),
        "peak_rss_mb": round(mem.mb, 1),
    }
    if args.kind == "fourier":
        # Health of the inputs: mean of sum_j A[i,j] (1 = healthy, ~0 = rows collapsed into eps).
        # Outside the timed region.
        with torch.no_grad():
            Rd = R.detach()
            diff = q[:, :, :, None, :] - k[:, :, None, :, :]
            W = torch.special.sinc((Rd / math.pi) * diff).prod(-1) ** args.p
            if args.causal:
                W = W * torch.ones(args.seq, args.seq).tril()
            S = W.sum(-1)
            result["attn_row_sum_mean"] = float((S / (S + args.eps)).mean())
    result.update({"std": args.std, "repeats": args.repeats, "times": times,
                   "peak_rss_total_mb": round(mem.total_mb, 1) if mem.exact else None,
                   "peak_rss_method": mem.method, "jemalloc": jem, "torch": torch.__version__})
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# Config (the same YAML and --set semantics as swift-ff-train)
# ----------------------------------------------------------------------------------------------

def load_config(path, overrides):
    with open(path) as f:
        tree = yaml.safe_load(f) or {}
    for o in overrides:
        key, sep, text = o.partition("=")
        if not sep or not key:
            sys.exit(f"--set {o}: expected key.path=value")
        # The value is read as YAML, as the Swift trainer does (numbers, booleans, strings).
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                sys.exit(f"--set {o}: '{part}' is a value, not a section")
        node[parts[-1]] = value
    return tree


def get(tree, dotted, default=None):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def model_config(tree, vocab_size):
    """The model section with the README's defaults, as one flat dict (the same keys as the
    `config` JSON that `swift-ff-train export` writes into the safetensors metadata)."""
    m = lambda key, d=None: get(tree, "model." + key, d)
    cfg = {
        "vocab_size": int(vocab_size),
        "layers": int(m("layers")), "d_model": int(m("d_model")), "heads": int(m("heads")),
        "d_ff": int(m("d_ff")), "context": int(m("context")),
        "norm": m("norm", "post"), "positions": m("positions", "sinusoidal"),
        "activation": m("activation", "relu"), "dropout": float(m("dropout", 0.1)),
        "tie_embeddings": bool(m("tie_embeddings", True)),
        "scale_embeddings": bool(m("scale_embeddings", True)),
        "init_std": float(m("init_std", 0.02)),
        "attention": {
            "kind": m("attention.kind", "fourier"), "p": int(m("attention.p", 4)),
            # float(): PyYAML reads "1e-6" (no dot) as a string
            "eps": float(m("attention.eps", 1e-6)), "r_mode": m("attention.r_mode", "scalar"),
            # r_init: auto sets R from the data in swift-ff-train; a throughput comparison
            # only needs a value of the same order.
            "r_init": 0.2 if m("attention.r_init", "auto") == "auto" else float(m("attention.r_init")),
        },
    }
    if m("output", "full") != "full":
        note(f"model.output={m('output')} is not modelled here; using a full softmax")
    return cfg


def resolve_data_dir(tree):
    d = get(tree, "data.dir")
    if d is None:
        return None
    # The Swift trainer resolves it against the working directory; also try the repo root so
    # the script works from anywhere.
    for cand in (d, os.path.join(REPO_ROOT, d)):
        if os.path.isdir(cand):
            return cand
    return None


def vocab_size_for(tree, fallback):
    d = resolve_data_dir(tree)
    if d and os.path.exists(os.path.join(d, "vocab.json")):
        with open(os.path.join(d, "vocab.json")) as f:
            return len(json.load(f)["tokens"]), os.path.join(d, "vocab.json")
    if fallback is None:
        sys.exit(f"no vocab.json under data.dir={get(tree, 'data.dir')!r}: pass --vocab N")
    return fallback, "--vocab"


# ----------------------------------------------------------------------------------------------
# The language model (README, "The model"); attribute names = safetensors tensor names
# ----------------------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["d_model"], cfg["heads"]
        self.H, self.D = H, C // H
        a = cfg["attention"]
        self.kind, self.r_mode, self.p, self.eps = a["kind"], a["r_mode"], a["p"], a["eps"]
        # One Linear for q, k, v: rows 0..C-1 are q (head h at rows h*D..), then k, then v,
        # which is exactly what .view(B, T, 3, H, D) below assumes.
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        if self.kind == "fourier":
            n = {"scalar": 1, "per_dim": self.D, "per_head": H}[self.r_mode]
            self.R = nn.Parameter(torch.full([n], a["r_init"]))
        elif self.kind != "softmax":
            sys.exit(f"model.attention.kind={self.kind}: expected fourier or softmax")

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.H, self.D).permute(2, 0, 3, 1, 4)  # (B, H, T, D)
        if self.kind == "fourier":
            o = fourier_attention(q, k, v, self.R, self.r_mode, self.p, self.eps, causal=True)
        else:
            o = softmax_attention(q, k, v, causal=True)
        return self.proj(o.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["d_model"], cfg["d_ff"])
        self.fc2 = nn.Linear(cfg["d_ff"], cfg["d_model"])
        act = cfg["activation"]
        if act not in ("relu", "gelu"):
            sys.exit(f"model.activation={act}: expected relu or gelu")
        # GELU is the tanh approximation, as in the Swift kernels (and GPT-2).
        self.act = nn.ReLU() if act == "relu" else nn.GELU(approximate="tanh")

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["d_model"]
        self.pre = cfg["norm"] == "pre"
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg["dropout"])

    def forward(self, x):
        if self.pre:
            h = x + self.drop(self.attn(self.ln1(x)))
            return h + self.drop(self.mlp(self.ln2(h)))
        h = self.ln1(x + self.drop(self.attn(x)))
        return self.ln2(h + self.drop(self.mlp(h)))


class LanguageModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        V, C, T, L = cfg["vocab_size"], cfg["d_model"], cfg["context"], cfg["layers"]
        if cfg["norm"] not in ("pre", "post"):
            sys.exit(f"model.norm={cfg['norm']}: expected pre or post")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(V, C)
        if cfg["positions"] == "learned":
            self.pos_emb = nn.Embedding(T, C)
        elif cfg["positions"] == "sinusoidal":
            # Interleaved sin/cos (even = sin, odd = cos), frequency 10000^(-2i/C): the Swift
            # table. A buffer, not persistent: it is not in the safetensors file.
            t = torch.arange(T, dtype=torch.float64)[:, None]
            freq = torch.exp(-math.log(10000.0) * torch.arange(0, C, 2, dtype=torch.float64) / C)
            table = torch.zeros(T, C, dtype=torch.float64)
            table[:, 0::2] = torch.sin(t * freq)
            table[:, 1::2] = torch.cos(t * freq)
            self.register_buffer("pos_table", table.float(), persistent=False)
        else:
            sys.exit(f"model.positions={cfg['positions']}: expected sinusoidal or learned")
        self.emb_scale = math.sqrt(C) if cfg["scale_embeddings"] else 1.0
        self.drop = nn.Dropout(cfg["dropout"])
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(L))
        if cfg["norm"] == "pre":
            self.ln_f = nn.LayerNorm(C, eps=1e-5)
        if not cfg["tie_embeddings"]:
            self.lm_head = nn.Linear(C, V, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        # README "Initialisation"; the residual branches' output projections get 1/sqrt(2L) so
        # the residual stream's variance does not grow with depth (GPT-2).
        std = self.cfg["init_std"]
        residual_std = std / math.sqrt(2 * self.cfg["layers"])
        r_init = self.cfg["attention"]["r_init"]
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif name.endswith("attn.R"):
                p.fill_(r_init)
            elif p.dim() == 1:  # LayerNorm gains (ln1, ln2, ln_f)
                p.fill_(1.0)
            elif name.endswith("attn.proj.weight") or name.endswith("mlp.fc2.weight"):
                p.normal_(0.0, residual_std)
            else:
                p.normal_(0.0, std)

    def forward(self, idx):
        B, T = idx.shape
        pos = self.pos_emb.weight[:T] if hasattr(self, "pos_emb") else self.pos_table[:T]
        x = self.drop(self.tok_emb(idx) * self.emb_scale + pos)
        for block in self.blocks:
            x = block(x)
        if hasattr(self, "ln_f"):
            x = self.ln_f(x)
        head = self.lm_head.weight if hasattr(self, "lm_head") else self.tok_emb.weight
        return x @ head.t()


def make_optimizer(model, tree):
    # Decay only matrices and embeddings (README): not biases, LayerNorm gains or R.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(get(tree, "train.weight_decay", 0.0))},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=float(get(tree, "train.lr", 1e-3)),
        betas=(float(get(tree, "train.beta1", 0.9)), float(get(tree, "train.beta2", 0.999))),
        eps=float(get(tree, "train.adam_eps", 1e-8)))


def cmd_train(args):
    global FOURIER_FORMULA
    FOURIER_FORMULA = args.formula
    jem = report_allocator()
    tree = load_config(args.config, args.set)
    V, vocab_src = vocab_size_for(tree, args.vocab)
    cfg = model_config(tree, V)
    batch = args.batch or int(get(tree, "train.batch_size"))
    T = cfg["context"]
    clip = float(get(tree, "train.grad_clip", 0.0))
    if int(get(tree, "train.grad_accum", 1)) != 1:
        note("train.grad_accum is ignored: one micro-batch of --batch sequences per step")
    torch.manual_seed(int(get(tree, "run.seed", 1111)))
    model = LanguageModel(cfg)
    model.train()  # dropout on, as in training
    opt = make_optimizer(model, tree)
    n_params = sum(p.numel() for p in model.parameters())
    note(f"{cfg['attention']['kind']} attention, {n_params} parameters, vocab {V} ({vocab_src}), "
         f"batch {batch} x context {T}, {args.threads} thread(s)")

    # Random tokens: the data pipeline is not what is being compared, and random batches cost
    # the same FLOPs. Drawn up front so the timed loop holds only the training step.
    g = torch.Generator().manual_seed(args.seed)
    warmup = 2
    data = torch.randint(0, V, (warmup + args.steps, batch, T + 1), generator=g)

    def step(tokens):
        opt.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.item()  # .item() also makes the step's work complete before the clock stops

    times, losses = [], []
    with PeakRSS() as mem:
        for i in range(warmup + args.steps):
            t0 = time.perf_counter()
            losses.append(step(data[i]))
            if i >= warmup:
                times.append(time.perf_counter() - t0)

    step_s = statistics.median(times)
    print(json.dumps({
        "attention": cfg["attention"]["kind"], "threads": args.threads, "batch": batch,
        "formula": args.formula if cfg["attention"]["kind"] == "fourier" else None,
        "context": T, "tokens_per_s": batch * T / step_s, "step_seconds": step_s,
        "parameters": n_params,
        "steps": args.steps, "step_seconds_mean": statistics.fmean(times),
        "loss_first": losses[0], "loss_last": losses[-1],
        "peak_rss_mb": round(mem.mb, 1),
        "peak_rss_total_mb": round(mem.total_mb, 1) if mem.exact else None,
        "peak_rss_method": mem.method, "jemalloc": jem, "torch": torch.__version__,
    }), flush=True)


# ----------------------------------------------------------------------------------------------
# check-weights: the exported safetensors load 1:1 into this model
# ----------------------------------------------------------------------------------------------

def read_safetensors(path):
    """(tensors, metadata). A few lines of parsing instead of a dependency: the format is an
    8-byte little-endian header length, a JSON header, then raw little-endian data."""
    dtypes = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        blob = f.read()
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        arr = np.frombuffer(blob[a:b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(arr.copy())
    return tensors, meta


def read_token_shard(path):
    # 256 int32 header: magic 20240520, version (1: uint16 tokens, 2: uint32), token count.
    header = np.fromfile(path, dtype="<i4", count=256)
    if header[0] != 20240520:
        sys.exit(f"{path}: bad magic {header[0]}")
    dtype = {1: "<u2", 2: "<u4"}.get(int(header[1]))
    if dtype is None:
        sys.exit(f"{path}: unknown version {header[1]}")
    return np.fromfile(path, dtype=dtype, count=int(header[2]), offset=256 * 4).astype(np.int64)


def cmd_check_weights(args):
    report_allocator()
    tensors, meta = read_safetensors(args.weights)
    tree = load_config(args.config, args.set) if args.config else {}
    if "config" in meta:
        # The exported file says what model it holds; trust it over the YAML for the shape.
        mc = json.loads(meta["config"])
        cfg = model_config({"model": mc}, mc["vocab_size"])
        source = "safetensors metadata"
    else:
        if not args.config:
            sys.exit("no model config in the file's metadata: pass --config")
        V = tensors["tok_emb.weight"].shape[0]
        cfg = model_config(tree, V)
        source = args.config
    model = LanguageModel(cfg)
    model.load_state_dict(tensors, strict=True)  # every name and shape must match, both ways
    model.eval()
    V, T = cfg["vocab_size"], cfg["context"]

    # Real validation text when the config's data is here (a loss near the trainer's valid loss
    # shows the layout is not just loadable but right); random tokens otherwise.
    n_seq = args.batches * args.batch if args.batches > 0 else sys.maxsize
    d = resolve_data_dir(tree) if tree else None
    shard = os.path.join(d, get(tree, "data.valid", "valid.bin")) if d else None
    if shard and os.path.exists(shard):
        toks = read_token_shard(shard)
        # The trainer's independent segments: windows of T + 1 starting at multiples of T.
        full = (len(toks) - 1) // T
        segs = [torch.from_numpy(toks[s * T: s * T + T + 1]) for s in range(min(n_seq, full))]
        if n_seq > full and len(toks) - full * T >= 2:
            # Asked for more than the split holds: add the final partial segment too, so every
            # token but the first is predicted once and the loss is the trainer's valid loss.
            segs.append(torch.from_numpy(toks[full * T:]))
        data, data_src = segs, shard
    else:
        g = torch.Generator().manual_seed(args.seed)
        n_seq = n_seq if args.batches > 0 else 4 * args.batch
        data, data_src = list(torch.randint(0, V, (n_seq, T + 1), generator=g)), "random tokens"

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), args.batch):
            # torch.stack needs equal lengths: the partial segment (last) goes alone.
            group = [x for x in data[i: i + args.batch] if len(x) == len(data[i])]
            rest = data[i + len(group): i + args.batch]
            for chunk in [torch.stack(group)] + [x[None] for x in rest]:
                logits = model(chunk[:, :-1])
                total += F.cross_entropy(logits.reshape(-1, V), chunk[:, 1:].reshape(-1), reduction="sum").item()
                count += chunk[:, 1:].numel()
    loss = total / count
    print(json.dumps({
        "weights": args.weights, "config_from": source, "tensors": len(tensors),
        "parameters": sum(p.numel() for p in model.parameters()), "attention": cfg["attention"]["kind"],
        "eval_data": data_src, "sequences": len(data), "tokens": count,
        "loss": loss, "ppl": math.exp(loss), "uniform_loss": math.log(V), "torch": torch.__version__,
    }), flush=True)


# ----------------------------------------------------------------------------------------------

def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--check-weights PATH` (no subcommand) is accepted as a spelling of `check-weights PATH`.
    if "--check-weights" in argv and "check-weights" not in argv:
        i = argv.index("--check-weights")
        argv = ["check-weights", "--weights"] + argv[i + 1: i + 2] + argv[:i] + argv[i + 2:]

    ap = argparse.ArgumentParser(description="PyTorch baseline for swift-ff-train benchmarks")
    sub = ap.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("attention", help="forward+backward of one attention call")
    a.add_argument("--kind", choices=["fourier", "softmax"], default="fourier")
    a.add_argument("--batch", type=int, default=8)
    a.add_argument("--heads", type=int, default=8)
    a.add_argument("--seq", type=int, default=256)
    a.add_argument("--dim", type=int, default=16)
    a.add_argument("--causal", action="store_true")
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--std", type=float, default=0.25, help="std of q and k (v is N(0,1))")
    a.add_argument("--r-init", type=float, default=2.0)
    a.add_argument("--p", type=int, default=4)
    a.add_argument("--eps", type=float, default=1e-6)
    a.add_argument("--flush-denormal", action="store_true",
                   help="torch.set_flush_denormal(True): treat subnormals as 0 (off = plain PyTorch)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--formula", choices=["special", "sin"], default="special",
                   help="Fourier sinc as torch.special.sinc or as sin(u)/u")

    t = sub.add_parser("train", help="optimizer steps of a config's LM on random tokens")
    t.add_argument("--config", required=True)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--batch", type=int, default=None, help="sequences per step [train.batch_size]")
    t.add_argument("--vocab", type=int, default=None, help="vocabulary size if data.dir has no vocab.json")
    t.add_argument("--formula", choices=["special", "sin"], default="special",
                   help="Fourier sinc as torch.special.sinc or as sin(u)/u")
    t.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("check-weights", help="load exported safetensors (strict) and print an eval loss")
    c.add_argument("--weights", required=True, metavar="PATH.safetensors")
    c.add_argument("--config", default=None)
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--batches", type=int, default=4, help="0: the whole valid split")
    c.add_argument("--batch", type=int, default=4)
    c.add_argument("--seed", type=int, default=0)

    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if min(getattr(args, "repeats", 1), getattr(args, "steps", 1)) < 1:
        ap.error("--repeats and --steps must be >= 1")
    setup_threads(args.threads)
    {"attention": cmd_attention, "train": cmd_train, "check-weights": cmd_check_weights}[args.cmd](args)


if __name__ == "__main__":
    main()
