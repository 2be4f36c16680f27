"""Image decoding and encoding with clear failures: corrupt, truncated and odd-format files raise UserError.

JPEG, the format faces almost always come in and go out as, takes a fast path: simplejpeg (libjpeg-turbo)
straight to and from numpy arrays, without the per-file Python work of PIL's JPEG plugin, which cost more than
decoding a 112x96 face itself. Everything else goes through PIL.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from occgen.errors import UserError

#: Formats a build can store samples in.
FORMATS = ("jpg", "png", "webp")
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


def decode_array(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode to an H x W x 3 uint8 RGB array (JPEG by libjpeg-turbo; other formats, or JPEGs it refuses such
    as CMYK, through PIL). Truncated JPEGs are errors, not grey-filled images."""
    if data[:2] == b"\xff\xd8":
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError:
            pass  # let PIL try, and word the error if it fails too
    return np.asarray(decode_rgb(data, name))


def encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """Encode an H x W x 3 uint8 array as jpg (4:2:0, like PIL's default), png or webp."""
    if fmt == "jpg":
        return simplejpeg.encode_jpeg(image, quality=quality, colorspace="RGB", colorsubsampling="420")
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG")
    elif fmt == "webp":
        Image.fromarray(image).save(buf, format="WEBP", quality=quality)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def load_rgb(path: str | Path) -> Image.Image:
    """Read and decode one image file to RGB."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not data:
        raise UserError(f"{path}: empty file")
    return decode_rgb(data, str(path))
