"""Small figures drawn with Pillow (no plotting dependency).

:func:`scatter_panels` draws one panel per sample set: 2-D projections (two chosen coordinates) of
a reference set (grey) and the set itself (colour), on shared axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PANEL = 280
MARGIN = 24
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (23, 190, 207), (227, 119, 194), (140, 86, 75)]


def scatter_panels(reference: np.ndarray, sets: dict[str, np.ndarray], path: str | Path,
                   coords: tuple[int, int] = (0, 1), title: str = "") -> None:
    """Write a PNG with one panel per entry of ``sets``; arrays are (n, d)."""
    i, j = coords
    every = [reference] + list(sets.values())
    pts = np.concatenate([a[:, [i, j]] for a in every])
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, span = lo - 0.05 * span, 1.1 * span
    cols = max(1, min(4, len(sets)))
    rows = (len(sets) + cols - 1) // cols
    top = 22 if title else 0
    img = Image.new("RGB", (cols * (PANEL + MARGIN) + MARGIN, rows * (PANEL + MARGIN) + MARGIN + top),
                    "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((MARGIN, 6), title, fill="black")

    def to_px(a: np.ndarray, x0: int, y0: int) -> np.ndarray:
        u = (a[:, [i, j]] - lo) / span
        return np.stack([x0 + u[:, 0] * PANEL, y0 + (1 - u[:, 1]) * PANEL], axis=1)

    for k, (name, arr) in enumerate(sets.items()):
        x0 = MARGIN + (k % cols) * (PANEL + MARGIN)
        y0 = top + MARGIN + (k // cols) * (PANEL + MARGIN)
        draw.rectangle([x0, y0, x0 + PANEL, y0 + PANEL], outline=(160, 160, 160))
        for px, py in to_px(reference, x0, y0):
            draw.point((px, py), fill=(175, 175, 175))
        colour = COLOURS[k % len(COLOURS)]
        for px, py in to_px(arr, x0, y0):
            draw.ellipse([px - 1, py - 1, px + 1, py + 1], fill=colour)
        draw.text((x0 + 4, y0 + 3), name, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    img.save(tmp)
    tmp.replace(path)
