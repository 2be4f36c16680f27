"""The built-in ``--src demo`` source: synthetic, identity-labelled 112x96 faces drawn in code.

These are cartoons, not photographs of anyone: each identity has its own skin tone, hair, eye colour and face
shape, and each image varies pose, lighting and expression a little. They exist so that the demo and the tests run
with no data to download; train on real faces.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IDENTITIES = 16
IMAGES_PER_IDENTITY = 8
SIZE = (96, 112)  # (W, H), the SphereFace/CosFace crop
_SUPER = 4  # draw at 4x and downsample: antialiased edges


def items() -> list[tuple[str, str]]:
    """(relative path, identity name) of every demo image, sorted."""
    return [
        (f"person{i:02d}/{j:04d}.png", f"person{i:02d}") for i in range(IDENTITIES) for j in range(IMAGES_PER_IDENTITY)
    ]


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(":".join(map(str, parts)).encode()))


def face(identity: int, index: int) -> Image.Image:
    """Draw one synthetic face; the same arguments always give the same pixels."""
    who, shot = _rng("identity", identity), _rng("image", identity, index)
    tone = who.uniform(0, 1)  # light to dark skin
    skin = (1 - tone) * np.array([250, 215, 185]) + tone * np.array([95, 60, 40])
    hair = tuple(int(v) for v in who.uniform(10, 140, 3))
    iris = tuple(int(v) for v in who.uniform(20, 160, 3))
    face_w, face_h = who.uniform(30, 40), who.uniform(44, 52)
    light = shot.uniform(0.8, 1.15)
    dx, dy = shot.uniform(-3, 3), shot.uniform(-3, 3)
    smile = shot.uniform(-2, 5)

    s = _SUPER
    W, H = SIZE[0] * s, SIZE[1] * s
    bg = tuple(int(v) for v in _rng("bg", identity, index).uniform(40, 220, 3))
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)

    def box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
        return [(cx + dx - rx) * s, (cy + dy - ry) * s, (cx + dx + rx) * s, (cy + dy + ry) * s]

    skin_c = tuple(int(v) for v in np.clip(skin * light, 0, 255))
    d.ellipse(box(48, 30, face_w + 4, 24), fill=hair)  # hair behind the head
    d.ellipse(box(48, 62, face_w, face_h), fill=skin_c)
    d.rectangle([(48 + dx - 14) * s, (96 + dy) * s, (48 + dx + 14) * s, H], fill=skin_c)  # neck
    for ex in (30.3, 65.5):  # eyes at the alignment template's eye positions
        d.ellipse(box(ex, 51.6, 7, 4), fill=(245, 245, 245))
        d.ellipse(box(ex, 51.6, 3, 3), fill=iris)
        d.line([(ex + dx - 8) * s, (43 + dy) * s, (ex + dx + 8) * s, (42 + dy) * s], fill=hair, width=2 * s)
    d.polygon(
        [((48 + dx) * s, (58 + dy) * s), ((43 + dx) * s, (73 + dy) * s), ((53 + dx) * s, (73 + dy) * s)],
        fill=tuple(int(v * 0.85) for v in skin_c),
    )
    d.chord(box(48, 88, 14, 4 + max(smile, 0)), 0, 180, fill=(150, 40, 50))
    img = img.resize(SIZE, Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.4))
    noise = shot.normal(0, 4, (SIZE[1], SIZE[0], 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def face_bytes(rel: str) -> bytes:
    """PNG bytes of the demo face named by its relative path (``personII/JJJJ.png``)."""
    ident, name = rel.split("/")
    buf = io.BytesIO()
    face(int(ident.removeprefix("person")), int(name.split(".")[0])).save(buf, format="PNG")
    return buf.getvalue()
