"""Emoji glyphs of Noto Color Emoji (Debian package fonts-noto-color-emoji), rendered with Pillow.

Every code point of the Unicode emoji blocks that the font maps to a glyph is drawn at the font's
bitmap size (109 px, CBDT) on white, cropped to a square around the glyph, and resized to S×S.
Held-out split (fixed): glyphs sorted by code point, every 10th goes to the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from diffinv.data.base import ImageData

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
BLOCKS = ((0x2600, 0x27C0), (0x1F300, 0x1F650), (0x1F680, 0x1F700), (0x1F900, 0x1FB00))
BITMAP_SIZE = 109


def render_glyph(font: ImageFont.FreeTypeFont, char: str, image_size: int) -> np.ndarray | None:
    """(S, S, 3) uint8 of ``char`` on white, or None when the font has no glyph for it."""
    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((16, 16), char, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.size[0]) // 2, (side - glyph.size[1]) // 2))
    small = square.convert("RGB").resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def load_emoji(image_size: int = 32, font_path: Path | None = None) -> ImageData:
    """All single-code-point emoji of the font, (N, 3, S, S) uint8, split 9:1 by code point."""
    path = Path(font_path) if font_path is not None else EMOJI_FONT
    if not path.is_file():
        raise FileNotFoundError(f"emoji: font {path} not found; install it with "
                                "`apt-get install fonts-noto-color-emoji`")
    font = ImageFont.truetype(str(path), BITMAP_SIZE)
    images, codes = [], []
    for lo, hi in BLOCKS:
        for code in range(lo, hi):
            if font.getmask(chr(code)).getbbox() is None:
                continue
            img = render_glyph(font, chr(code), image_size)
            if img is not None:
                images.append(img)
                codes.append(code)
    if not images:
        raise ValueError(f"emoji: no glyphs could be rendered from {path}")
    stack = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    test = torch.zeros(len(images), dtype=torch.bool)
    test[9::10] = True
    return ImageData(name="emoji", train=stack[~test].contiguous(), test=stack[test].contiguous(),
                     split="code points sorted, every 10th glyph held out",
                     info={"font": str(path), "num_glyphs": len(images)})
