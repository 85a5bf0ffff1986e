"""The TrueType fonts the meter generator draws digits with, from Debian's font packages."""

import os

FONT_DIR = "/usr/share/fonts/truetype"
# package directory -> files. Condensed, mono, sans and serif faces: meter drums use all of
# these kinds of type. Order is fixed: the generator picks by index.
FONTS = [
    ("dejavu", "DejaVuSans.ttf"),
    ("dejavu", "DejaVuSans-Bold.ttf"),
    ("dejavu", "DejaVuSansMono.ttf"),
    ("dejavu", "DejaVuSansMono-Bold.ttf"),
    ("dejavu", "DejaVuSansCondensed-Bold.ttf"),
    ("dejavu", "DejaVuSerif.ttf"),
    ("dejavu", "DejaVuSerifCondensed-Bold.ttf"),
    ("liberation2", "LiberationSans-Regular.ttf"),
    ("liberation2", "LiberationSans-Bold.ttf"),
    ("liberation2", "LiberationMono-Regular.ttf"),
    ("liberation2", "LiberationSerif-Bold.ttf"),
    ("freefont", "FreeSans.ttf"),
    ("freefont", "FreeMonoBold.ttf"),
    ("freefont", "FreeSerif.ttf"),
    ("croscore", "Arimo-Bold.ttf"),
    ("croscore", "Cousine-Regular.ttf"),
    ("croscore", "Tinos-Regular.ttf"),
]
PACKAGES = "fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-croscore"


def font_paths():
    """Every font of FONTS, or SystemExit naming the Debian packages to install."""
    paths = [os.path.join(FONT_DIR, d, f) for d, f in FONTS]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(
            f"synth: {len(missing)} font(s) missing, e.g. {missing[0]}; "
            f"install them with: apt-get install {PACKAGES}")
    return paths
