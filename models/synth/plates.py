"""Light-guide plates (LGP) under backlight: dot patterns with defects, 128 x 128, pixel masks.

A plate is a grey field (light leaking through the plate) with a grid of brighter dots, the
printed or etched scattering pattern: square or staggered, slightly rotated, with dot size
constant (regular) or growing away from the LED edge (graded), lit unevenly. Defects, 1 to 3
per defective plate, are the three kinds the inspection targets:

  bright spot  a saturated blob with a halo, larger and brighter than the dots
  impurity     a dark irregular blob (particles in the material), covering dots
  scratch      a bright line or polyline across the pattern

The mask marks defect pixels (1) and everything else (0), drawn at 2x and reduced with a
box filter, a pixel being defective when at least half of it is covered.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
SCALE = 2
KINDS = ("spot", "impurity", "scratch")


def _dots(rng, draw, n, bg, dot):
    pitch = rng.uniform(7, 15)
    staggered = rng.random() < 0.5
    angle = np.deg2rad(rng.uniform(-4, 4)) if rng.random() < 0.6 else 0.0
    graded = rng.random() < 0.6
    r0 = rng.uniform(0.14, 0.24) * pitch
    r1 = rng.uniform(0.28, 0.4) * pitch if graded else r0
    axis = rng.integers(4)              # which edge the LED sits on
    ca, sa = np.cos(angle), np.sin(angle)
    # Enough rows and columns to cover the plate after rotation (staggered rows are closer).
    k = int(n / (0.85 * pitch)) + 4
    for j in range(-3, k):
        for i in range(-3, k):
            gx = (i + (0.5 if staggered and j % 2 else 0.0)) * pitch
            gy = j * pitch * (0.866 if staggered else 1.0)
            x = ca * gx - sa * gy
            y = sa * gx + ca * gy
            if not (-pitch < x < n + pitch and -pitch < y < n + pitch):
                continue
            t = np.clip([x, y, n - x, n - y][axis] / n, 0.0, 1.0)
            r = r0 + (r1 - r0) * t
            draw.ellipse([x - r, y - r, x + r, y + r], fill=dot)


def _defect(rng, kind, n, img_draw, mask_draw, bg):
    cx, cy = rng.uniform(0.08, 0.92, 2) * n
    if kind == "spot":
        rx, ry = rng.uniform(6, 13) * rng.uniform(0.75, 1.25, 2)
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        img_draw.ellipse(box, fill=int(rng.integers(240, 256)))
        mask_draw.ellipse(box, fill=255)
        return (cx, cy, max(rx, ry))
    if kind == "impurity":
        value = int(rng.integers(0, max(1, bg - 30)))
        for _ in range(int(rng.integers(2, 5))):
            ox, oy = rng.normal(0, 3.5, 2)
            rx, ry = rng.uniform(3.5, 8, 2)
            box = [cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry]
            img_draw.ellipse(box, fill=value)
            mask_draw.ellipse(box, fill=255)
        return None
    # scratch: a polyline of 1 to 3 segments
    length = rng.uniform(40, 170)
    heading = rng.uniform(0, np.pi)
    pts = [(cx, cy)]
    segs = int(rng.integers(1, 4))
    for _ in range(segs):
        heading += rng.normal(0, 0.25)
        x, y = pts[-1]
        pts.append((x + np.cos(heading) * length / segs, y + np.sin(heading) * length / segs))
    width = int(rng.integers(3, 6))
    img_draw.line(pts, fill=int(rng.integers(230, 256)), width=width, joint="curve")
    mask_draw.line(pts, fill=255, width=width, joint="curve")
    return None


def plate(rng, defective):
    """One plate: (uint8 128 x 128 x 3, uint8 mask 128 x 128 of 0/1, list of defect kinds)."""
    n = SIZE * SCALE
    bg = int(rng.integers(45, 110))
    dot = int(np.clip(bg + rng.integers(50, 110), 0, 205))
    img = Image.new("L", (n, n), bg)
    mask = Image.new("L", (n, n), 0)
    draw, mdraw = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    _dots(rng, draw, n, bg, dot)
    kinds = []
    halos = []
    if defective:
        for _ in range(int(rng.integers(1, 4))):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            kinds.append(kind)
            halo = _defect(rng, kind, n, draw, mdraw, bg)
            if halo:
                halos.append(halo)
    if rng.random() < 0.7:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    x = np.asarray(img, np.float32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    for cx, cy, r in halos:   # light scattered around a bright spot
        x += rng.uniform(20, 50) * np.exp(-(((xx * n - cx) ** 2 + (yy * n - cy) ** 2) / (2 * (1.6 * r) ** 2)))
    # Backlight falls off away from the LED edge; the camera adds its own vignetting.
    gain = 1.0 + rng.uniform(-0.25, 0.25) * (xx - 0.5) + rng.uniform(-0.25, 0.25) * (yy - 0.5)
    gain -= rng.uniform(0, 0.25) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    x *= gain
    x = np.asarray(Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BOX), np.float32)
    x += rng.normal(0, rng.uniform(1, 7), x.shape)
    tint = rng.uniform(0.9, 1.1, 3)
    rgb = np.clip(x[..., None] * tint, 0, 255).astype(np.uint8)
    m = np.asarray(mask.resize((SIZE, SIZE), Image.BOX)) >= 128
    return rgb, m.astype(np.uint8), kinds


def plates(seed, count, defective_share):
    """count plates from one seed: (uint8 N x 128 x 128 x 3, uint8 N x 128 x 128, kinds)."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    masks = np.empty((count, SIZE, SIZE), np.uint8)
    kinds = []
    for i in range(count):
        images[i], masks[i], k = plate(rng, rng.random() < defective_share)
        kinds.append(k)
    return images, masks, kinds
