"""Image decoding with clear failures: corrupt, truncated and odd-format files raise UserError."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from occgen.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


def decode_rgb(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode bytes of any format PIL knows (sniffed by content, not extension) to RGB.

    Greyscale (PGM, GIF palettes) is expanded to three channels; alpha is dropped.
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise UserError(f"{name}: cannot decode image (not in a format Pillow reads)") from None
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{name}: cannot decode image ({exc})") from None
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def load_rgb(path: str | Path) -> Image.Image:
    """Read and decode one image file to RGB."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not data:
        raise UserError(f"{path}: empty file")
    return decode_rgb(data, str(path))
