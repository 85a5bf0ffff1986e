"""Odometer-style meter windows: 4 to 8 digit drums, 350 x 50 RGB, labelled with the reading.

What varies (each drawn per image from the seed): digit count, font (fonts.py), size and
placement of the digits, black-on-white or white-on-black drums and red decimal drums,
digit rolls caught between two values, the housing around the window, perspective, blur,
uneven lighting, glare, sensor noise and JPEG artefacts.

Roll convention: a drum between d and d+1 reads as the value that fills more of the window;
offsets are kept out of [0.3, 0.7] of the digit pitch so that every label is decidable by
eye.
"""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .fonts import font_paths

WIDTH, HEIGHT = 350, 50
SCALE = 2                      # drawn at 2x, then resized down the way a camera crop would be
_FONTS = {}


def _font(path, size):
    key = (path, size)
    if key not in _FONTS:
        _FONTS[key] = ImageFont.truetype(path, size)
    return _FONTS[key]


def _perspective_coeffs(src, dst):
    """Coefficients for Image.transform(PERSPECTIVE) mapping output points dst to input src."""
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64)).tolist()


def _drum_cell(rng, digit, roll, cell_w, cell_h, font, pitch, fg, bg):
    """One drum: digit (and the next one below it when rolling) on a drum face."""
    cell = Image.new("RGB", (cell_w, cell_h), bg)
    draw = ImageDraw.Draw(cell)
    dx = rng.uniform(-0.06, 0.06) * cell_w
    for k, value in enumerate((digit, (digit + 1) % 10)):
        if k == 1 and roll == 0.0:
            break
        cy = cell_h / 2 - roll * pitch + k * pitch
        draw.text((cell_w / 2 + dx, cy), str(value), font=font, fill=fg, anchor="mm")
    # Drum curvature: faces darken towards the top and bottom edge of the window.
    shade = 1.0 - rng.uniform(0.1, 0.45) * np.abs(np.linspace(-1, 1, cell_h))[:, None, None] ** 2
    return Image.fromarray((np.asarray(cell, np.float32) * shade).astype(np.uint8))


def meter(rng, fonts=None):
    """One meter window: (uint8 array 50 x 350 x 3, label string)."""
    fonts = fonts or font_paths()
    n = int(rng.integers(4, 9))
    digits = rng.integers(0, 10, n)
    w, h = WIDTH * SCALE, HEIGHT * SCALE

    housing = tuple(int(c) for c in rng.integers(0, 256, 3))
    img = Image.new("RGB", (w, h), housing)
    mx0, mx1 = rng.uniform(0.0, 0.1, 2) * w
    my0, my1 = rng.uniform(0.0, 0.14, 2) * h
    win_w, win_h = w - mx0 - mx1, h - my0 - my1
    cell_w = win_w / n
    gap = rng.uniform(0.03, 0.14) * cell_w
    dark_drums = rng.random() < 0.5
    red_from = n - int(rng.integers(1, 4)) if rng.random() < 0.3 else n
    font_path = fonts[int(rng.integers(len(fonts)))]
    font_px = max(8, int(win_h * rng.uniform(0.6, 0.9)))
    font = _font(font_path, font_px)
    pitch = font_px * rng.uniform(0.95, 1.2)
    gap_color = tuple(int(c) for c in rng.integers(0, 70, 3))
    # One drum colour per window (drums are made alike), varied a little per drum.
    if dark_drums:
        base_bg, base_fg = rng.integers(0, 60, 3), rng.integers(190, 256, 3)
    else:
        base_bg, base_fg = rng.integers(170, 256, 3), rng.integers(0, 60, 3)
    red_bg = np.array([rng.integers(150, 220), rng.integers(0, 50), rng.integers(0, 50)])

    def tone(c):
        return tuple(int(v) for v in np.clip(c + rng.integers(-12, 13, 3), 0, 255))

    ImageDraw.Draw(img).rectangle([mx0, my0, w - mx1, h - my1], fill=gap_color)

    label = []
    for i, d in enumerate(digits):
        d = int(d)
        roll = 0.0
        if rng.random() < (0.4 if i == n - 1 else 0.1):
            roll = rng.uniform(0.05, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 0.95)
        label.append(str(d if roll < 0.5 else (d + 1) % 10))
        bg, fg = (tone(red_bg), (245, 240, 235)) if i >= red_from else (tone(base_bg), tone(base_fg))
        cw, ch = int(cell_w - gap), int(win_h)
        cell = _drum_cell(rng, d, roll, max(cw, 4), max(ch, 4), font, pitch, fg, bg)
        img.paste(cell, (int(mx0 + i * cell_w + gap / 2), int(my0)))

    # Camera: perspective, focus blur, then down to the model's size.
    jitter = np.array([0.03 * w, 0.08 * h])
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    src = [tuple(np.array(p) + rng.uniform(-1, 1, 2) * jitter) for p in dst]
    img = img.transform((w, h), Image.PERSPECTIVE, _perspective_coeffs(src, dst),
                        Image.BILINEAR, fillcolor=housing)
    if rng.random() < 0.6:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 2.2)))
    img = img.resize((WIDTH, HEIGHT), Image.BILINEAR)

    x = np.asarray(img, np.float32)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    # Uneven lighting: a tilted plane of gain.
    gain = 1.0 + rng.uniform(-0.35, 0.35) * (xx / WIDTH - 0.5) + rng.uniform(-0.3, 0.3) * (yy / HEIGHT - 0.5)
    x *= (gain * rng.uniform(0.7, 1.15))[..., None]
    if rng.random() < 0.4:   # glare: a soft bright ellipse
        cx, cy = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        sx, sy = rng.uniform(10, 60), rng.uniform(5, 25)
        x += (rng.uniform(60, 200) * np.exp(-((xx - cx) / sx) ** 2 - ((yy - cy) / sy) ** 2))[..., None]
    x += rng.normal(0.0, rng.uniform(0, 10), x.shape)
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=int(rng.integers(15, 80)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(out, np.uint8), "".join(label)


def meters(seed, count):
    """count meters from one seed: (uint8 N x 50 x 350 x 3, list of labels)."""
    rng = np.random.default_rng(seed)
    fonts = font_paths()
    images = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    labels = []
    for i in range(count):
        images[i], label = meter(rng, fonts)
        labels.append(label)
    return images, labels
