"""Image decoding and encoding with clear failures: corrupt, truncated and odd-format files raise UserError.

JPEG, the format faces almost always come in and go out as, takes a fast path: simplejpeg (libjpeg-turbo)
straight to and from numpy arrays, without the per-file Python work of PIL's JPEG plugin, which cost more than
decoding a 112x96 face itself. Everything else goes through PIL.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from occgen.errors import UserError

#: Formats a build can store samples in.
FORMATS = ("jpg", "png", "webp")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
)


#: Images with more pixels than this are refused before decoding: a small file can claim a huge size
#: (a decompression bomb). Pillow's own limit, applied to the JPEG fast path too.
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485


def decode_rgb(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode bytes of any format PIL knows (sniffed by content, not extension) to 8-bit RGB.

    Greyscale (PGM, GIF palettes) is expanded to three channels, 16-bit greyscale is scaled to 8 bits,
    CMYK is converted, and alpha is dropped (as torchvision's ImageFolder loader does).
    """
    if not data:
        raise UserError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        _check_pixels(img.width, img.height, name)
        img.load()
    except UnidentifiedImageError:
        raise UserError(f"{name}: cannot decode image (not in a format Pillow reads)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{name}: refused, over the decompression-bomb limit of {MAX_PIXELS:,} pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{name}: cannot decode image ({exc})") from None
    return _to_rgb(img)


def _check_pixels(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise UserError(
            f"{name}: refused, {width}x{height} is over the decompression-bomb limit of {MAX_PIXELS:,} pixels"
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):  # 16-bit greyscale ("I;16*", or "I" holding 0..65535): scale, do not clip
        grey = np.asarray(img, dtype=np.int64)
        if img.mode != "I" or grey.max(initial=0) > 255:
            grey = (grey + 128) // 257
        img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # palettes with transparency convert without a warning this way
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_array(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode to an H x W x 3 uint8 RGB array (JPEG by libjpeg-turbo; other formats, or JPEGs it refuses such
    as CMYK, through PIL). Truncated JPEGs are errors, not grey-filled images."""
    if data[:2] == b"\xff\xd8":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            _check_pixels(width, height, name)
            return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError:
            pass  # let PIL try, and word the error if it fails too
    return np.asarray(decode_rgb(data, name))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 uint8 array resized (bilinear) to ``size`` = (height, width)."""
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


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
    return decode_rgb(data, str(path))


def crop_center(face: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The centred (height, width) window of a face: 112x96 from a 112x112 ArcFace crop, the SphereFace template
    being the ArcFace one moved 8 px to the left."""
    h, w = face.shape[:2]
    ch, cw = size
    if ch > h or cw > w:
        raise UserError(f"--crop {ch}x{cw} is larger than the {h}x{w} faces")
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(face[y : y + ch, x : x + cw])
