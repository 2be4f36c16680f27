"""`fromnet embed`: faces of an occgen manifest -> an embeddings Parquet file (key, src, embedding)."""

from __future__ import annotations

import time
from functools import wraps
from pathlib import Path

import click

from fromnet.cli import main
from occgen.clicommon import parse_size


def model_options(fn):
    """The options that pick and feed a model, shared by `embed` and `eval`."""
    options = [
        click.option(
            "--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... (auto: a GPU if any)."
        ),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16"]),
            default="auto",
            show_default=True,
            help="auto: bf16 on GPUs that have it, else fp32.",
        ),
        click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1)),
        click.option("--flip", is_flag=True, help="Flip fusion: embedding of the face plus that of its mirror image."),
        click.option("--input-size", help="ONNX only: HEIGHTxWIDTH when the model does not fix it."),
        click.option(
            "--channels",
            type=click.Choice(["rgb", "bgr"]),
            default="rgb",
            show_default=True,
            help="ONNX only: channel order the model expects.",
        ),
        click.option(
            "--mean",
            default="127.5",
            show_default=True,
            help="ONNX only: subtracted from 0-255 pixels (one value or three, R,G,B).",
        ),
        click.option("--std", default="127.5", show_default=True, help="ONNX only: then divided by this."),
        click.option(
            "--layout",
            type=click.Choice(["nchw", "nhwc"]),
            default="nchw",
            show_default=True,
            help="ONNX only: input tensor layout.",
        ),
        click.option(
            "-j",
            "--workers",
            default=0,
            show_default=True,
            type=click.IntRange(min=0),
            help="Processes decoding shards (0 or 1: decode in this process).",
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
    ]

    @wraps(fn)
    def wrapper(
        *args, device, precision, batch_size, flip, input_size, channels, mean, std, layout, workers, quiet, **kw
    ):
        settings = dict(
            device=device,
            precision=precision,
            batch_size=batch_size,
            flip=flip,
            quiet=quiet,
            workers=workers,
            onnx=dict(
                input_size=parse_size(input_size) if input_size else None,
                channels=channels,
                mean=mean,
                std=std,
                layout=layout,
            ),
        )
        return fn(*args, model_settings=settings, **kw)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


class ModelRunner:
    """Opens the model once and embeds manifests with the chosen settings; an image met again (the clean faces
    every set of one test side shares) takes the vector it got the first time."""

    def __init__(self, model: str, settings: dict, reuse: tuple[Path, ...] = ()) -> None:
        from fromnet.embed import OnnxOptions, embedder_signature, open_embedder, read_known

        self.settings = settings
        self.embedder = open_embedder(model, settings["device"], settings["precision"], OnnxOptions(**settings["onnx"]))
        self.seen = read_known(reuse, embedder_signature(self.embedder, settings["flip"]))
        self.reused = 0  # faces of the last embed() that took a vector from earlier

    def embed(self, manifest: str | Path):
        import numpy as np

        from fromnet.embed import embed_manifest

        s = self.settings
        table = embed_manifest(
            manifest, self.embedder, s["batch_size"], s["flip"], s["quiet"], s["workers"], reuse=self.seen
        )
        digests = table["image_digest"].to_numpy(zero_copy_only=False)
        self.reused = sum(d in self.seen for d in digests)
        vectors = np.asarray(table["embedding"].combine_chunks().values).reshape(len(table), -1)
        self.seen.update(zip(digests, vectors))
        return table

    def embed_encoded(self, images, names, crop=None):
        from fromnet.embed import embed_encoded

        s = self.settings
        return embed_encoded(self.embedder, images, names, s["batch_size"], s["flip"], crop)


@main.command("embed")
@click.option("--model", required=True, help="A fromnet run folder or checkpoint, or onnx:PATH for any ONNX embedder.")
@click.option(
    "--shards",
    "manifest",
    required=True,
    help="The faces to embed: a manifest folder (manifests/NAME), or WebDataset shards made by any tool "
    "('faces-{000000..000099}.tar', several joined by '::', pipe:COMMAND, s3:// and other URLs with fsspec).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Embeddings .parquet file.")
@click.option(
    "--reuse",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Embeddings file(s) this model made before (e.g. of the clean set): faces with the same image bytes take "
    "their vectors instead of being embedded again. Repeatable.",
)
@model_options
def embed_cmd(model: str, manifest: str, out: Path, reuse: tuple[Path, ...], model_settings: dict) -> None:
    """Write one row per sample: key, src, embedding (list of float32), occluded, box_area_ratio.

    \b
    Example: fromnet embed --model runs/from-r50 --shards manifests/occ-lfw-2.0 --out occ2.parquet --flip
    """
    from fromnet.embed import write_embeddings

    runner = ModelRunner(model, model_settings, reuse)
    start = time.perf_counter()
    table = runner.embed(manifest)
    seconds = time.perf_counter() - start
    write_embeddings(table, out)
    dim = len(table["embedding"][0]) if len(table) else 0
    click.echo(
        f"embed: {len(table):,} faces, {dim}-d, {seconds:.1f} s ({len(table) / max(seconds, 1e-9):,.0f} faces/s)"
        f"{', flip fusion' if model_settings['flip'] else ''}"
        f"{f', {runner.reused:,} taken from --reuse' if runner.reused else ''} -> {out}"
    )
