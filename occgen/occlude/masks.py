"""Face masks from templates in the MaskTheFace layout: a ``masks.cfg`` whose sections name an RGBA template and
six anchor points on it (``mask_a`` top left, ``mask_b`` top centre, ``mask_c`` top right, ``mask_d`` bottom
left, ``mask_e`` bottom centre, ``mask_f`` bottom right), one section per type and view (``surgical``,
``surgical_left``, ``surgical_right``, ...). occgen ships no templates: MaskTheFace's (MIT) are in its repository,
github.com/aqeelanwar/MaskTheFace, folder ``masks/``.

A mask goes on a face as MaskTheFace puts it: the view (front, left, right) follows the head's yaw (more than 13
degrees either way takes the side view), and a perspective transform, fitted by least squares, takes the
template's six anchors onto six points of the face: the middle of the nose bridge, the cheek contour at the
height of the nose tip, the jaw at the height of the lower lip and the chin (occgen.occlude.face gives them
from five landmarks). The template is first shrunk by a whole factor with a box filter (cached), so the warp
never samples a large image sparsely. Pure functions but ``load_masks``; no randomness: the caller draws the
type and colour (see occgen.occlude.run).
"""

from __future__ import annotations

import configparser
import hashlib
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor

from occgen.errors import UserError
from occgen.occlude.face import FACE_HALF_WIDTH, JAW_HALF_WIDTH, Face

CONFIG = "masks.cfg"
VIEWS = ("front", "left", "right")
ANCHORS = ("mask_a", "mask_b", "mask_c", "mask_d", "mask_e", "mask_f")
#: MaskTheFace's threshold (degrees) between the front and the side views.
SIDE_VIEW_YAW = 13.0
#: Where the lower lip is, in eye-to-mouth distances below the eyes (the jaw anchors' height).
LIP_DOWN = 1.1
#: The warped template is at least this many times finer than the face before the warp resamples it.
OVERSAMPLE = 2
#: Where users get templates, for messages.
WHERE = (
    "MaskTheFace's templates (MIT) are in github.com/aqeelanwar/MaskTheFace, folder masks/: clone it and pass "
    "--masks MaskTheFace/masks"
)


@dataclass(frozen=True)
class Template:
    name: str  # the cfg section, e.g. "surgical_left"
    kind: str  # "surgical"
    view: str  # front | left | right
    image: Image.Image  # RGBA
    anchors: np.ndarray  # (6, 2) a..f in template pixels


@dataclass(frozen=True)
class MaskLibrary:
    root: Path
    templates: dict[tuple[str, str], Template]  # (kind, view) -> template
    _reduced: dict[tuple[str, int], tuple[Image.Image, np.ndarray, tuple[int, int, int, int]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({k for k, _ in self.templates}))

    @cached_property
    def digest(self) -> str:
        """SHA-256 over every template's name, anchors and pixels."""
        h = hashlib.sha256()
        for key in sorted(self.templates):
            t = self.templates[key]
            h.update(f"{t.name}\t{t.kind}\t{t.view}\t{t.anchors.tolist()}\n".encode())
            h.update(t.image.tobytes())
        return h.hexdigest()

    def template(self, kind: str, view: str) -> Template:
        """The template of this view, or the front one when the library lacks the side view."""
        return self.templates.get((kind, view)) or self.templates[(kind, "front")]

    def reduced(self, t: Template, factor: int) -> tuple[Image.Image, np.ndarray, tuple[int, int, int, int]]:
        """The template shrunk ``factor`` times (premultiplied RGBa), its anchors there, and its visible box."""
        key = (t.name, factor)
        if key not in self._reduced:
            image = t.image.convert("RGBa")
            if factor > 1:
                image = image.reduce(factor)
            anchors = (t.anchors - (factor - 1) / 2) / factor  # box filter: pixel j covers j*f .. (j+1)*f - 1
            self._reduced[key] = (image, anchors, image.getchannel("a").getbbox() or (0, 0, 0, 0))
        return self._reduced[key]


def _section_view(name: str) -> tuple[str, str]:
    for view in ("left", "right"):
        if name.endswith(f"_{view}"):
            return name[: -len(view) - 1], view
    return name, "front"


def _template_file(root: Path, given: str) -> Path:
    """The template a cfg line names: relative to the cfg's folder, to its parent (MaskTheFace's own cfg says
    masks/templates/x.png from the repository root), or by file name in templates/."""
    rel = Path(given.strip())
    for candidate in (root / rel, root.parent / rel, root / Path(*rel.parts[1:]), root / "templates" / rel.name):
        if candidate.is_file():
            return candidate
    raise UserError(f"{root / CONFIG}: template {given.strip()} not found beside it (looked in {root}/templates)")


def _point(cfg: Path, section: str, key: str, text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{cfg} [{section}] {key}: expected 'x, y' pixel coordinates, got {text.strip()!r}") from None
    return x, y


def load_masks(root: str | Path | None, kinds: tuple[str, ...] | None = None) -> MaskLibrary:
    """Every template of ``root/masks.cfg`` (of the given kinds) with its anchors; sections without a template
    (MaskTheFace's ``empty`` and ``inpaint``) are not masks and are skipped."""
    if root is None:
        raise UserError(f"--masks DIR is needed: a folder with masks.cfg and its templates. {WHERE}")
    root = Path(root)
    cfg_path = root / CONFIG
    if not cfg_path.is_file():
        raise UserError(f"--masks {root}: no {CONFIG} there. {WHERE}")
    cfg = configparser.ConfigParser()
    try:
        cfg.read_string(cfg_path.read_text())
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{cfg_path}: cannot read it as MaskTheFace's masks.cfg ({exc})") from None
    found = {_section_view(s)[0] for s in cfg.sections() if "template" in cfg[s]}
    unknown = sorted(set(kinds or ()) - found)
    if unknown:
        raise UserError(f"--types: {', '.join(unknown)} not in {cfg_path}; it has {', '.join(sorted(found))}")
    templates = {}
    for section in cfg.sections():
        sec = cfg[section]
        kind, view = _section_view(section)
        if "template" not in sec or (kinds and kind not in kinds):
            continue
        absent = [a for a in ANCHORS if a not in sec]
        if absent:
            raise UserError(f"{cfg_path} [{section}]: lacks {', '.join(absent)}; a template needs six anchor points")
        file = _template_file(root, sec["template"])
        try:
            with Image.open(io.BytesIO(file.read_bytes())) as im:
                image = im.convert("RGBA")
        except OSError as exc:
            raise UserError(f"mask template {file} cannot be read ({exc}); replace or remove it") from None
        if image.getchannel("A").getbbox() is None:
            raise UserError(f"mask template {file} is fully transparent; a template needs an alpha channel")
        anchors = np.array([_point(cfg_path, section, a, sec[a]) for a in ANCHORS])
        templates[(kind, view)] = Template(section, kind, view, image, anchors)
    if not any(v == "front" for _, v in templates):
        raise UserError(f"{cfg_path}: no template sections with mask_a..mask_f found. {WHERE}")
    lacking = sorted({k for k, _ in templates} - {k for k, v in templates if v == "front"})
    if lacking:
        raise UserError(f"{cfg_path}: {', '.join(lacking)} have side views but no front template")
    return MaskLibrary(root, templates)


def parse_colors(text: str | None) -> tuple[str, ...]:
    """``--colors``: colour names or #rrggbb, comma separated, normalised to #rrggbb; ``original`` keeps the
    template's own colours."""
    if not text:
        return ()
    out = []
    for name in (c.strip() for c in text.split(",")):
        if not name:
            continue
        if name == "original":
            out.append(name)
            continue
        try:
            r, g, b = ImageColor.getrgb(name)[:3]
        except ValueError:
            raise UserError(f"--colors: {name!r} is not a colour: give names (blue) or #rrggbb") from None
        out.append(f"#{r:02x}{g:02x}{b:02x}")
    return tuple(out)


def view_of(face: Face) -> str:
    """MaskTheFace's rule: the side view when the nose leaves the eye-mouth line by more than 13 degrees."""
    if face.yaw < -SIDE_VIEW_YAW:
        return "left"
    if face.yaw > SIDE_VIEW_YAW:
        return "right"
    return "front"


def face_anchors(face: Face) -> np.ndarray:
    """The six points (a..f) of a face that a template's anchors go to."""
    a, c = face.contour(face.nose_down, FACE_HALF_WIDTH)
    d, f = face.contour(LIP_DOWN, JAW_HALF_WIDTH)
    b = face.eye + (face.nose - face.eye) / 2  # the middle of the nose bridge
    e = face.chin
    return np.stack([a, b, c, d, e, f])


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 perspective transform taking ``src`` (n >= 4, 2) onto ``dst`` in the least-squares sense (direct
    linear transform on points normalised to mean 0 and mean distance sqrt 2, Hartley 1997)."""

    def normaliser(p: np.ndarray) -> np.ndarray:
        mean = p.mean(axis=0)
        scale = np.sqrt(2) / np.linalg.norm(p - mean, axis=1).mean()
        return np.array([[scale, 0, -scale * mean[0]], [0, scale, -scale * mean[1]], [0, 0, 1]])

    ts, td = normaliser(src), normaliser(dst)
    s = np.c_[src, np.ones(len(src))] @ ts.T
    d = np.c_[dst, np.ones(len(dst))] @ td.T
    rows = []
    for (x, y, _), (u, v, _) in zip(s, d):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    h = np.linalg.svd(np.asarray(rows))[2][-1].reshape(3, 3)
    m = np.linalg.inv(td) @ h @ ts
    return m / m[2, 2]


def project(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.c_[points, np.ones(len(points))] @ m.T
    return p[:, :2] / p[:, 2:]


@dataclass(frozen=True)
class WarpedMask:
    image: Image.Image  # RGBA, the face's size, transparent off the mask
    template: Template
    raw_box: tuple[int, int, int, int]  # the warped template's visible box, not clipped to the face


def warp_mask(library: MaskLibrary, kind: str, face: Face, size: tuple[int, int], color: str | None) -> WarpedMask:
    """The mask of ``kind`` for this face on a transparent (W, H) = ``size`` canvas, recoloured when ``color``
    (#rrggbb) is given."""
    template = library.template(kind, view_of(face))
    dst = face_anchors(face)
    ratio = np.linalg.norm(dst[2] - dst[0]) / max(1.0, float(np.linalg.norm(template.anchors[2] - template.anchors[0])))
    factor = max(1, int(1 / (OVERSAMPLE * ratio)))
    image, anchors, visible = library.reduced(template, factor)
    m = homography(anchors, dst)
    # Pillow samples output pixel (x, y) at (x + .5, y + .5) and reads the input with centres at +.5; the anchors
    # have centres at integers: shift into Pillow's convention both ways, then invert (output -> input).
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    inverse = shift @ np.linalg.inv(m) @ np.linalg.inv(shift)
    inverse /= inverse[2, 2]
    warped = image.transform(size, Image.Transform.PERSPECTIVE, tuple(inverse.ravel()[:8]), Image.Resampling.BILINEAR)
    warped = warped.convert("RGBA")
    if color:
        warped = recolor(warped, color)
    x0, y0, x1, y1 = visible
    edges = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) - 0.5  # pixel edges, centres at integers
    corners = project(m, edges)
    (bx0, by0), (bx1, by1) = np.floor(corners.min(axis=0) + 0.5), np.ceil(corners.max(axis=0) + 0.5)
    return WarpedMask(warped, template, (int(bx0), int(by0), int(bx1), int(by1)))


def recolor(rgba: Image.Image, color: str) -> Image.Image:
    """The mask in ``color``, keeping its shading: each pixel's luminance relative to the mask's bright parts
    (95th percentile) scales the colour."""
    array = np.asarray(rgba).astype(np.float64)
    luma = array[..., :3] @ np.array([0.299, 0.587, 0.114])
    opaque = array[..., 3] >= 128
    if not opaque.any():
        return rgba
    ref = max(1.0, float(np.percentile(luma[opaque], 95)))
    target = np.array(ImageColor.getrgb(color)[:3], dtype=np.float64)
    array[..., :3] = np.clip(target * np.minimum(luma / ref, 1.0)[..., None], 0, 255)
    return Image.fromarray(np.round(array).astype(np.uint8), "RGBA")
