#!/usr/bin/env python3
"""Converts an image folder (one sub-folder per class, ImageNet's layout) into the IDX files the
ViT reads: OUT-images.idx (N, S, S, 3) unsigned bytes, channels last, and OUT-labels.idx (N) int32
(IDX type 0x0C, big-endian), plus OUT-classes.json (label -> folder name). Each image is resized
so its shorter side is RESIZE pixels (bilinear) and centre-cropped to SIZE x SIZE: DeiT's
evaluation transform, also used for training here (random resized crops are not built).

    pip install pillow
    python3 launch/images2idx.py IMAGENET/train data/imagenet/train [--size 224 --resize 256]

Classes are the sorted folder names, so train and val get the same label ids. The images file is
written uncompressed (the trainer memory-maps it) and atomically (a temporary name, then rename).
"""
import argparse, json, os, struct, sys, time

from PIL import Image

EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("out", help="output prefix, e.g. data/imagenet/train")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--resize", type=int, default=256)
    a = ap.parse_args()
    classes = sorted(d for d in os.listdir(a.folder) if os.path.isdir(os.path.join(a.folder, d)))
    if not classes:
        sys.exit(f"error: {a.folder}: no class sub-folders")
    items = []
    for label, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(a.folder, c))):
            if os.path.splitext(f)[1] in EXTENSIONS:
                items.append((os.path.join(a.folder, c, f), label))
    if not items:
        sys.exit(f"error: {a.folder}: no images in its class folders")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    s = a.size
    tmp = a.out + "-images.idx.tmp"
    start = time.time()
    with open(tmp, "wb") as f:
        f.write(bytes([0, 0, 0x08, 4]) + struct.pack(">IIII", len(items), s, s, 3))
        for k, (path, _) in enumerate(items):
            try:
                im = Image.open(path).convert("RGB")
            except Exception as e:  # one clear message naming the file
                os.remove(tmp)
                sys.exit(f"error: {path}: cannot read the image ({e})")
            w, h = im.size
            scale = a.resize / min(w, h)
            im = im.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - s) // 2, (h - s) // 2
            f.write(im.crop((left, top, left + s, top + s)).tobytes())
            if (k + 1) % 1000 == 0 or k + 1 == len(items):
                rate = (k + 1) / (time.time() - start)
                print(f"\r{k + 1}/{len(items)} images, {rate:.0f}/s, ETA {(len(items) - k - 1) / rate:.0f}s", end="", flush=True)
    print()
    os.replace(tmp, a.out + "-images.idx")
    with open(a.out + "-labels.idx.tmp", "wb") as f:
        f.write(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", len(items)))
        f.write(b"".join(struct.pack(">i", label) for _, label in items))
    os.replace(a.out + "-labels.idx.tmp", a.out + "-labels.idx")
    with open(a.out + "-classes.json", "w") as f:
        json.dump(classes, f, indent=0)
    print(f"wrote {a.out}-images.idx ({len(items)} x {s} x {s} x 3), {a.out}-labels.idx, {a.out}-classes.json ({len(classes)} classes)")


if __name__ == "__main__":
    main()
