"""`fromnet occlusion`: the occlusion pattern and KxK mask a FROM checkpoint predicts for aligned faces, or the
attention maps of the attention variant."""

from __future__ import annotations

import io
from pathlib import Path

import click

from fromnet.cli import main
from occgen.errors import UserError


@main.command("occlusion")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model",
    required=True,
    help="A run folder or checkpoint: a FROM variant with a mask decoder, or "
    "the attention variant (its K maps and their importance).",
)
@click.option(
    "--draw",
    "draw_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a PNG of the faces with the grid, the mask (red = switched off) and the pattern.",
)
@click.option("--K", "K", type=click.IntRange(1, 8), help="Grid of the mask read-out (default: the model's K).")
def occlusion_cmd(images: tuple[Path, ...], model: str, draw_to: Path | None, K: int | None) -> None:
    """Print the predicted occlusion pattern and the coarse KxK mask of each aligned face.

    \b
    Example: fromnet occlusion --model runs/from face1.jpg face2.jpg --draw occlusion.png
    """
    import numpy as np

    from fromnet.checkpoint import load_model
    from fromnet.models import VARIANTS
    from fromnet.occlusion import describe, describe_attention, draw, draw_attention, read_attention, read_occlusion
    from occgen.images import load_rgb

    loaded = load_model(model, "cpu")
    size = tuple(loaded.spec.input_size)
    faces = []
    for path in images:
        face = np.asarray(load_rgb(path))
        if face.shape[:2] != size:
            raise UserError(
                f"{path} is {face.shape[0]}x{face.shape[1]} (HxW); this model takes aligned "
                f"{size[0]}x{size[1]} faces (align photos with `occgen align`)"
            )
        faces.append(face)
    batch = np.stack(faces)
    names = [str(p) for p in images]
    if VARIANTS[loaded.spec.variant].family == "attention":
        maps = read_attention(loaded.model, batch, names)
        for m in maps:
            click.echo(describe_attention(m))
        if draw_to is not None:
            _write_png(draw_attention(batch, maps), draw_to)
        return
    if K is not None and K != loaded.spec.K and loaded.model.predictor is not None:
        raise UserError(f"--K {K}: this model's pattern predictor was trained at K={loaded.spec.K}")
    k = K or loaded.spec.K
    readouts = read_occlusion(loaded.model, k, batch, names)
    for r in readouts:
        click.echo(describe(r))
    if draw_to is not None:
        _write_png(draw(batch, readouts, k), draw_to)


def _write_png(image, path: Path) -> None:
    from occgen.writer import atomic_write

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())
    click.echo(f"-> {path}")
