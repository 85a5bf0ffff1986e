#!/usr/bin/env python3
"""Write a generated set to disk as PNG files plus labels.json, for accel's tests and CLIs.

    python models/synth/make_set.py meters --seed 1000003 --count 1000 --out DIR
    python models/synth/make_set.py plates --seed 1000003 --count 500 --out DIR

meters: DIR/meter_00000.png (350 x 50) ...; labels.json = [{"image", "reading"}]
plates: DIR/plate_00000.png (128 x 128) and DIR/plate_00000_mask.png (0 / 255);
        labels.json = [{"image", "mask", "defective", "kinds", "defect_area_pct"}]
Half of the plates are defective. Needs NumPy, Pillow and the fonts in fonts.py.

--camera saves every other image as a JPEG at twice the size (a phone crop is rarely the
model's size: the task APIs' resize is then part of what is tested). --index FILE writes
the labels to FILE instead, with image paths relative to FILE's folder.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from synth import meters, plates  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["meters", "plates"])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--camera", action="store_true")
    p.add_argument("--index")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    labels = []

    def save(img, stem, i):
        if a.camera and i % 2:
            big = Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.BICUBIC)
            big.save(os.path.join(a.out, stem + ".jpg"), quality=90)
            return stem + ".jpg"
        Image.fromarray(img).save(os.path.join(a.out, stem + ".png"))
        return stem + ".png"
    if a.kind == "meters":
        images, readings = meters.meters(a.seed, a.count)
        for i, (img, reading) in enumerate(zip(images, readings)):
            name = save(img, f"meter_{i:05}", i)
            labels.append({"image": name, "reading": reading})
    else:
        images, masks, kinds = plates.plates(a.seed, a.count, 0.5)
        for i, (img, mask, k) in enumerate(zip(images, masks, kinds)):
            name, mname = save(img, f"plate_{i:05}", i), f"plate_{i:05}_mask.png"
            Image.fromarray(mask * 255).save(os.path.join(a.out, mname))
            labels.append({"image": name, "mask": mname, "defective": bool(mask.any()),
                           "kinds": k, "defect_area_pct": round(float(mask.mean()) * 100, 4)})
    index = a.index or os.path.join(a.out, "labels.json")
    rel = os.path.relpath(a.out, os.path.dirname(os.path.abspath(index)))
    for entry in labels:
        for key in ("image", "mask"):
            if key in entry and rel != ".":
                entry[key] = os.path.join(rel, entry[key])
    with open(index, "w") as f:
        json.dump(labels, f, indent=0)
    print(f"make_set: {a.count} {a.kind} (seed {a.seed}) in {a.out}")


if __name__ == "__main__":
    sys.exit(main())
