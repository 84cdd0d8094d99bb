#!/usr/bin/env python3
"""Cross-check: do the ViT weights that swift-ff-train exports give the same results in PyTorch?

This is a plain-PyTorch DeiT-style vision transformer written from the formulas (pre-LN blocks,
a class token, learned position embeddings, a linear head on the class token), with both of our
attention kinds: softmax and FourierFormer's Fourier attention (Nguyen et al. 2022). It reads a
`model.safetensors` written by swift-ff-train, takes the model config from the file's metadata
(key "config"; falling back to a `config.json` beside it), loads the tensors with
`load_state_dict(strict=True)` (so every name and shape must match, nothing left over or missing),
runs the Fashion-MNIST test set and prints the test loss (mean cross-entropy), top-1 and top-5
accuracy in the same format as the trainer. With --expect-top1 it fails (exit 1) when the number
of correctly classified images differs from the trainer's by more than 2 (fp32 near-ties); with
--expect-loss, when the test loss differs from the trainer's by more than 1e-4 relative.

Run:
  python3 launch/vit_pytorch.py runs/vit-fashion/model.safetensors --expect-top1 0.5279 \\
      --expect-loss 1.3458266
  python3 launch/vit_pytorch.py W.safetensors --images t10k-images-idx3-ubyte.gz \\
      --labels t10k-labels-idx1-ubyte.gz --threads 2 --limit 1000
  python3 launch/vit_pytorch.py W.safetensors --attention softmax   # run the other branch
      (with --attention overriding a Fourier model's kind, the attn.R tensors are dropped: the
       numbers are then meaningless, it only shows that the softmax path runs)

Tensor names (timm DeiT-like): patch_embed.proj.{weight [C,Ch,W,W], bias}, cls_token [1,1,C],
pos_embed [1,N+1,C], blocks.{l}.{ln1,ln2}.{weight,bias}, blocks.{l}.attn.qkv.{weight [3C,C],
bias}, blocks.{l}.attn.proj.{weight,bias}, blocks.{l}.attn.R (Fourier only), blocks.{l}.mlp.
{fc1,fc2}.{weight,bias}, norm.{weight,bias}, head.{weight [K,C], bias}.

Needs: torch, safetensors, numpy (the data is read with gzip + numpy).
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

DEFAULT_IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
DEFAULT_LABELS = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"

# ----------------------------------------------------------------------------- model


def fourier_attention(q, k, v, R, p, eps):
    """q, k, v: (B, H, N, D); R broadcastable to (B, H, N, N, D).
    u[i,j,d] = R_d (q[i,d] - k[j,d]);  W_ij = (prod_d sinc u)^p;  A = W / (sum_j W_ij + eps);  A v.
    torch.sinc is the normalised sinc, sin(pi x)/(pi x), hence the division by pi."""
    u = R * (q.unsqueeze(3) - k.unsqueeze(2))            # (B, H, N, N, D)
    w = torch.sinc(u / math.pi).prod(dim=-1).pow(p)      # (B, H, N, N)
    a = w / (w.sum(dim=-1, keepdim=True) + eps)
    return a @ v


def softmax_attention(q, k, v):
    d = q.shape[-1]
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    return a @ v


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["d_model"], cfg["heads"]
        self.heads, self.head_dim = H, C // H
        att = cfg["attention"]
        self.kind = att["kind"]
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        if self.kind == "fourier":
            self.p, self.eps, self.r_mode = att.get("p", 4), att.get("eps", 1e-6), att.get("r_mode", "scalar")
            n = {"scalar": 1, "per_dim": self.head_dim, "per_head": H}[self.r_mode]
            r0 = att.get("r_init", 1.0)  # "auto": R was set from the data; the weights bring it
            self.R = nn.Parameter(torch.full((n,), 1.0 if r0 == "auto" else float(r0)))
        elif self.kind != "softmax":
            raise ValueError(f"unknown attention kind {self.kind!r}")

    def r_broadcast(self):
        """R as a tensor that broadcasts against (B, H, N, N, D)."""
        if self.r_mode == "scalar":
            return self.R.view(1, 1, 1, 1, 1)
        if self.r_mode == "per_dim":  # one R per dimension, shared by the heads
            return self.R.view(1, 1, 1, 1, self.head_dim)
        return self.R.view(1, self.heads, 1, 1, 1)  # per_head: one R per head, shared by d

    def forward(self, x):
        B, N, C = x.shape
        # columns [q | k | v], each C wide and split into heads of head_dim contiguous columns
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.kind == "fourier":
            y = fourier_attention(q, k, v, self.r_broadcast(), self.p, self.eps)
        else:
            y = softmax_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["d_model"], cfg["d_ff"])
        self.fc2 = nn.Linear(cfg["d_ff"], cfg["d_model"])
        act = cfg.get("activation", "gelu")
        if act == "gelu":  # swift-ff-train's gelu is the tanh approximation unless the config says erf
            exact = cfg.get("gelu", "tanh") in ("erf", "exact", "none")
            self.act = nn.GELU(approximate="none" if exact else "tanh")
        elif act == "relu":
            self.act = nn.ReLU()
        else:
            raise ValueError(f"unknown activation {act!r}")

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg["d_model"], eps=1e-5)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg["d_model"], eps=1e-5)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        P = cfg["patch"]
        W = cfg.get("patch_window", P)  # window side; W > P overlaps neighbouring patches
        self.proj = nn.Conv2d(cfg["channels"], cfg["d_model"], kernel_size=W, stride=P, padding=(W - P) // 2)

    def forward(self, x):  # (B, Ch, S, S) -> (B, N, C), patches row-major
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.get("kind", "vit") == "vit", f"not a ViT config: kind={cfg.get('kind')!r}"
        assert cfg.get("norm", "pre") == "pre", "only pre-LN blocks are supported"
        C, S, P = cfg["d_model"], cfg["image_size"], cfg["patch"]
        n_patches = (S // P) ** 2
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, C))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg["layers"]))
        self.norm = nn.LayerNorm(C, eps=1e-5)
        self.head = nn.Linear(C, cfg["classes"])
        # dropout / drop_path only act in training; this script only evaluates.

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# ----------------------------------------------------------------------------- loading


def read_config(weights_path):
    with safe_open(weights_path, framework="pt") as f:
        meta = f.metadata() or {}
    if "config" in meta:
        return json.loads(meta["config"])
    side = os.path.join(os.path.dirname(os.path.abspath(weights_path)), "config.json")
    if os.path.exists(side):
        with open(side) as f:
            return json.load(f)
    sys.exit(f"error: {weights_path} has no 'config' metadata and there is no config.json beside it")


IDX_TYPES = {0x08: np.uint8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4")}


def read_idx(path):
    """A gzipped (or plain) IDX file: 00 00 <type> <ndims>, dims as big-endian uint32, then the
    elements row-major, big-endian. Types: 0x08 uint8 (pixels, labels), 0x0B int16, 0x0C int32
    (labels of more than 256 classes, as launch/images2idx.py writes them)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        sys.exit(f"error: {path}: not an IDX file of type 0x08/0x0B/0x0C (header {raw[:4].hex()})")
    dtype, ndims = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndims, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndims)
    if data.size != int(np.prod(dims)):
        sys.exit(f"error: {path}: {data.size} elements of data for dims {dims.tolist()}")
    return data.reshape(dims.tolist())


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", help="model.safetensors exported by swift-ff-train")
    ap.add_argument("--images", default=DEFAULT_IMAGES)
    ap.add_argument("--labels", default=DEFAULT_LABELS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test images")
    ap.add_argument("--batch", type=int, default=250, help="images per forward pass")
    ap.add_argument("--attention", choices=["fourier", "softmax"],
                    help="override the config's attention kind (a smoke test of the other branch)")
    ap.add_argument("--expect-top1", type=float, help="trainer's top-1 (a fraction); fail if >2 images differ")
    ap.add_argument("--expect-loss", type=float, help="trainer's test loss; fail if the relative difference > 1e-4")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    cfg = read_config(args.weights)
    state = load_file(args.weights)
    if args.attention and args.attention != cfg["attention"]["kind"]:
        print(f"note: attention kind overridden {cfg['attention']['kind']} -> {args.attention}", file=sys.stderr)
        cfg["attention"]["kind"] = args.attention
        if args.attention == "softmax":  # a Fourier file's R has no place in a softmax model
            state = {k: v for k, v in state.items() if not k.endswith(".attn.R")}
    model = ViT(cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    att = cfg["attention"]
    print(f"model: vit {cfg['layers']} layers, d_model {cfg['d_model']}, {cfg['heads']} heads, "
          f"attention {att['kind']}" + (f" (r_mode {att.get('r_mode', 'scalar')}, p {att.get('p', 4)})"
                                        if att["kind"] == "fourier" else "") + f", {n_params} parameters",
          file=sys.stderr)

    images, labels = read_idx(args.images), read_idx(args.labels).astype(np.int64)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    S, Ch = cfg["image_size"], cfg["channels"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        sys.exit(f"error: {args.images}: want uint8 images (N, S, S) or (N, S, S, channels), got "
                 f"{images.dtype} {list(images.shape)}")
    if images.ndim == 3:
        images = images[..., None]  # grey: one channel
    if images.shape[1:] != (S, S, Ch):
        sys.exit(f"error: images are {list(images.shape[1:])} (H, W, channels); the model wants {[S, S, Ch]}")
    images = images.transpose(0, 3, 1, 2)  # channels last, as the trainer reads IDX -> (N, Ch, S, S)
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, Ch, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, Ch, 1, 1)

    n = len(labels)
    loss_sum, top1, top5 = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, n, args.batch):
            x = torch.from_numpy(images[s:s + args.batch].astype(np.float32)) / 255.0
            x = (x - mean) / std
            y = torch.from_numpy(labels[s:s + args.batch])
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double().item()
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += (best[:, 0] == y).sum().item()
            top5 += (best == y[:, None]).any(dim=1).sum().item()

    print(f"pytorch: test loss {loss_sum / n:.4f} | top-1 {100 * top1 / n:.2f}% | top-5 {100 * top5 / n:.2f}% "
          f"({n} images)")
    print(f"exact: loss {loss_sum / n:.8f}, {top1} top-1 and {top5} top-5 correct; "
          f"time {time.time() - t0:.1f}s, {args.threads} thread(s)", file=sys.stderr)
    failed = False
    if args.expect_loss is not None:
        rel = abs(loss_sum / n - args.expect_loss) / abs(args.expect_loss)
        failed = rel > 1e-4
        print(f"loss check: {loss_sum / n:.6f} vs {args.expect_loss:.6f} expected, relative difference "
              f"{rel:.2e} ({'FAIL' if failed else 'OK'}, tolerance 1e-4)")
    if args.expect_top1 is not None:
        expected = round(args.expect_top1 * n)
        diff = top1 - expected
        failed |= abs(diff) > 2
        print(f"top-1 check: {top1} correct vs {expected} expected, difference {diff:+d} images "
              f"({'FAIL' if abs(diff) > 2 else 'OK'}, tolerance 2)")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
