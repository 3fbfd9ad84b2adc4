"""Line charts drawn with Pillow for ``psnr_nfe.py``: one panel per problem, a metric against network
evaluations per sample (log scale), one line per method; rows are ``psnr_nfe.summary`` dicts."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from diffinv.figures import COLOURS

W, H, M, LEGEND = 340, 260, 48, 150


def draw_curves(rows: list[dict], path: Path, y: str, label: str, reference: float | None = None) -> None:
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    img = Image.new("RGB", (len(problems) * (W + M) + M + LEGEND, H + 2 * M + 20), "white")
    draw = ImageDraw.Draw(img)
    draw.text((M, 6), f"{label} against evaluations per sample (forward + backward, log scale)", fill="black")
    for k, problem in enumerate(problems):
        sel = [r for r in rows if r["problem"] == problem]
        xs = [math.log10(max(1.0, r["nfe_forward"] + r["nfe_backward"])) for r in sel]
        ys = [r[y] for r in sel] + ([reference] if reference is not None else [])
        x_lo, x_hi = min(xs) - 0.1, max(xs) + 0.1
        y_lo, y_hi = min(ys), max(ys)
        pad = 0.08 * max(y_hi - y_lo, 1e-6)
        y_lo, y_hi = y_lo - pad, y_hi + pad
        x0, y0 = M + k * (W + M), M + 10

        def px(xv: float, yv: float, x0=x0, y0=y0, x_lo=x_lo, x_hi=x_hi, y_lo=y_lo, y_hi=y_hi):
            return (x0 + (xv - x_lo) / (x_hi - x_lo) * W, y0 + (1 - (yv - y_lo) / (y_hi - y_lo)) * H)

        draw.rectangle([x0, y0, x0 + W, y0 + H], outline=(150, 150, 150))
        draw.text((x0 + 4, y0 + 3), problem, fill="black")
        for e in range(0, 5):
            for mult in (1, 2, 5):
                v = math.log10(mult * 10 ** e)
                if x_lo <= v <= x_hi:
                    gx, _ = px(v, y_lo)
                    draw.line([gx, y0 + H, gx, y0 + H + 4], fill="black")
                    if mult == 1 or (x_hi - x_lo) < 1.5:
                        draw.text((gx - 8, y0 + H + 6), f"{mult * 10 ** e:g}", fill="black")
        for j in range(5):
            v = y_lo + (y_hi - y_lo) * (j + 0.5) / 5
            _, gy = px(x_lo, v)
            draw.line([x0 - 4, gy, x0, gy], fill="black")
            draw.text((x0 - M + 4, gy - 6), f"{v:.2f}" if y_hi - y_lo < 5 else f"{v:.1f}", fill="black")
        if reference is not None:
            a, b = px(x_lo, reference), px(x_hi, reference)
            draw.line([a, b], fill=(120, 120, 120), width=1)
        for i, method in enumerate(methods):
            pts = sorted((math.log10(max(1.0, r["nfe_forward"] + r["nfe_backward"])), r[y])
                         for r in sel if r["method"] == method)
            colour = COLOURS[i % len(COLOURS)] if not method.startswith("deepinv") else \
                tuple(int(0.55 * c) for c in COLOURS[i % len(COLOURS)])
            xy = [px(a, b) for a, b in pts]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for a, b in xy:
                draw.rectangle([a - 3, b - 3, a + 3, b + 3], fill=colour) if method.startswith("deepinv") \
                    else draw.ellipse([a - 3, b - 3, a + 3, b + 3], fill=colour)
    lx = len(problems) * (W + M) + M
    for i, method in enumerate(methods):
        colour = COLOURS[i % len(COLOURS)] if not method.startswith("deepinv") else \
            tuple(int(0.55 * c) for c in COLOURS[i % len(COLOURS)])
        draw.line([lx, M + 20 + 16 * i, lx + 18, M + 20 + 16 * i], fill=colour, width=3)
        draw.text((lx + 24, M + 14 + 16 * i), method, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    img.save(tmp)
    tmp.replace(path)
