"""`fromnet eval`: verification (10-fold accuracy, TAR@FAR, ROC) and identification (rank-1) -> table, JSON, plots."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import click
import numpy as np
import pandas as pd

from fromnet.cli import main
from fromnet.cli.embed import ModelRunner, model_options
from occgen.clicommon import parse_size
from occgen.errors import UserError


def labelled(text: str) -> tuple[str | None, str]:
    """'LABEL=PATH' -> (LABEL, PATH); a plain PATH -> (None, PATH)."""
    label, sep, rest = text.partition("=")
    return (label, rest) if sep and label and "/" not in label and rest else (None, text)


def _stem(path: str) -> str:
    p = Path(path.rstrip("/"))
    return p.stem if p.suffix == ".parquet" else p.name


class Sources:
    """Embeddings by path: files are read, manifest folders embedded with --model (once, saved under OUT)."""

    def __init__(self, runner_factory: Callable[[], ModelRunner] | None, out: Path) -> None:
        self._factory = runner_factory
        self.runner: ModelRunner | None = None  # opened on first use, shared by manifests and --bin sets
        self._cache: dict[str, object] = {}
        self.out = out

    def get(self, path: str):
        from fromnet.embed import write_embeddings
        from fromnet.eval.pairs import read_embeddings

        key = str(Path(path).resolve())
        if key in self._cache:
            return self._cache[key]
        p = Path(path)
        if p.is_dir() and (p / "shards.json").is_file():
            if self._factory is None:
                raise UserError(
                    f"{path} is a manifest: give --model to embed it, or pass its embeddings file (fromnet embed)"
                )
            self.runner = self.runner or self._factory()
            saved = self.out / "embeddings" / f"{p.name}.parquet"
            write_embeddings(self.runner.embed(p), saved)
            emb = read_embeddings(saved)
            emb.name = p.name
        elif p.is_file():
            emb = read_embeddings(p)
        else:
            raise UserError(f"{path}: neither an embeddings .parquet file nor a finished manifest folder")
        self._cache[key] = emb
        return emb


def evaluate_bin(path: Path, label: str | None, runner, crop: str | None, folds, metric: str, fars, boot) -> list:
    """Embed an insightface .bin verification set's faces and score its pairs."""
    from fromnet.eval.pairs import Embeddings, bin_pairs_table
    from fromnet.eval.verification import PairSet, evaluate_set, select_folds
    from occgen.formats.binset import read_bin
    from occgen.occlude.sources import bin_rels

    binset = read_bin(path)
    names = bin_rels(path, binset.issame)
    vectors = runner.embed_encoded(binset.images, names, parse_size(crop) if crop else None)
    keys = np.array(names, dtype=object)
    emb = Embeddings(path.name, keys, keys, vectors)
    table = bin_pairs_table(names, binset.issame)
    if folds:
        table = select_folds(table, folds)
    return evaluate_set(table, PairSet(label or path.stem, emb, emb), metric, fars, boot)


def scoring_options(fn):
    """How pairs are scored and summarised, shared by `eval` and `compare`: --metric, --far (as ``fars``), and
    --bootstrap / --bootstrap-seed passed on as one ``boot`` (fromnet.eval.bootstrap.Bootstrap)."""
    from fromnet.eval.bootstrap import DEFAULT_RESAMPLES, Bootstrap

    @click.option(
        "--metric",
        type=click.Choice(["cosine", "euclidean"]),
        default="cosine",
        show_default=True,
        help="Pair score: cosine similarity, or Euclidean distance of the raw embeddings.",
    )
    @click.option(
        "--far", "fars", multiple=True, type=float, help="FAR for TAR@FAR (repeatable; default 1e-3 and 1e-4)."
    )
    @click.option(
        "--bootstrap",
        "resamples",
        default=DEFAULT_RESAMPLES,
        show_default=True,
        type=click.IntRange(min=0),
        help="Resamples of the people for the 95 % intervals (0: no intervals).",
    )
    @click.option("--bootstrap-seed", default=0, show_default=True, type=int, help="Seed of the resampling.")
    @wraps(fn)
    def wrapper(*args, resamples, bootstrap_seed, **kw):
        return fn(*args, boot=Bootstrap(resamples, bootstrap_seed), **kw)

    return wrapper


def read_key_list(path: str) -> np.ndarray:
    """Keys from a manifest folder (its samples) or a text file (one key a line)."""
    p = Path(path)
    if p.is_dir():
        try:
            keys = pd.read_parquet(p / "samples.parquet", columns=["key"])["key"].tolist()
        except Exception as exc:
            raise UserError(f"{path}: cannot read the manifest's keys ({exc})") from None
    elif p.is_file():
        keys = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    else:
        raise UserError(f"{path}: no such key list or manifest")
    return np.array(keys, dtype=object)


@main.command("eval")
@click.option(
    "--pairs",
    "pairs_list",
    multiple=True,
    help="Pairs: a pairs manifest (manifests/NAME, from "
    "`occgen build --pairs` or `occgen partial`) or an LFW-format pairs.txt; repeatable (e.g. the "
    "non-centered and centered partial sets).",
)
@click.option(
    "--protocol",
    type=click.Choice(["pairs", "partiallfw"]),
    default="pairs",
    show_default=True,
    help="partiallfw: also print the PartialLFW table (holistic; non-centered and centered "
    "partial-holistic, -same, -cross), each the mean over its part combinations and factors.",
)
@click.option(
    "--embeddings",
    "embeddings",
    multiple=True,
    help="Embeddings file (repeatable): one verification set each (label: the file name), both images of "
    "a pair taken from it.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="LABEL=A[,B]",
    help="A verification set: first image of each pair from A, second from B (default A). A and B are "
    "embeddings files or, with --model, manifest folders. E.g. N-O=clean.parquet,occ-2.parquet",
)
@click.option(
    "--bin",
    "bins",
    multiple=True,
    metavar="[LABEL=]PATH",
    help="An insightface verification set (lfw.bin, cfp_fp.bin, agedb_30.bin, ...; repeatable), embedded with "
    "--model and scored with insightface's ten folds (consecutive tenths of its pairs).",
)
@click.option(
    "--crop",
    metavar="HxW",
    help="With --bin: cut this centred window from each face first; 112x96 takes the SphereFace/CosFace crop "
    "(FROM's input) from 112x112 ArcFace crops.",
)
@click.option("--model", help="Embed manifest folders on the way: a fromnet run/checkpoint or onnx:PATH.")
@click.option(
    "--fold",
    "folds",
    multiple=True,
    type=click.IntRange(min=0),
    help="Only the pairs of this fold (repeatable), e.g. --fold 9 for people a model was not trained on.",
)
@click.option("--gallery", help="Identification gallery: embeddings file or (with --model) manifest.")
@click.option(
    "--probes",
    multiple=True,
    metavar="[LABEL=]SRC",
    help="Identification probes (repeatable, e.g. clean and occluded), each scored against the gallery.",
)
@click.option("--distractors", multiple=True, help="Distractor faces added to the gallery (repeatable).")
@click.option("--gallery-keys", help="Only these gallery keys: a manifest folder or a text file of keys.")
@click.option("--probe-keys", help="Only these probe keys: a manifest folder or a text file of keys.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for results.json, results.md and the PNG plots.",
)
@scoring_options
@model_options
def eval_cmd(
    pairs_list,
    protocol,
    embeddings,
    sets,
    bins,
    crop,
    model,
    metric,
    folds,
    fars,
    gallery,
    probes,
    distractors,
    gallery_keys,
    probe_keys,
    out,
    boot,
    model_settings,
) -> None:
    """Evaluate face embeddings on verification pairs and/or identification lists, with 95 % intervals that
    resample people (--bootstrap).

    \b
    Examples:
      fromnet eval --pairs lfw/pairs.txt --set clean=clean.parquet --set N-O=clean.parquet,occ-2.parquet --out res
      fromnet eval --pairs manifests/occ-lfw-pairs --model runs/from --out res      (groups by protocol)
      fromnet eval --bin lfw.bin --bin cfp_fp.bin --model runs/from --crop 112x96 --out res
      fromnet eval --gallery clean.parquet --probes clean=clean.parquet --probes occ=occ-2.parquet --out res
      fromnet eval --model runs/attention --protocol partiallfw --pairs manifests/partial-lfw \\
          --pairs manifests/partial-lfw-centered --out res
    """
    from fromnet.eval.identification import identify
    from fromnet.eval.pairs import read_pairs
    from fromnet.eval.report import partiallfw_summary, write_report
    from fromnet.eval.verification import DEFAULT_FARS, PairSet, PreparedPairs, evaluate_set, select_folds

    factory = (lambda: ModelRunner(model, model_settings)) if model else None
    src = Sources(factory, out)
    fars = tuple(fars) or DEFAULT_FARS
    verification, identification = [], []
    if not pairs_list and (sets or embeddings):
        raise UserError("--set/--embeddings evaluate verification pairs: give --pairs (a pairs manifest or pairs.txt)")
    if protocol == "partiallfw" and not (
        pairs_list and model and not sets and not embeddings and all(Path(p).is_dir() for p in pairs_list)
    ):
        raise UserError(
            "--protocol partiallfw scores --model on the pairs manifests of `occgen partial`: give "
            "--model RUN and --pairs manifests/PARTIAL (and the centered one)"
        )
    for pairs in pairs_list:
        table = read_pairs(pairs)
        if folds:
            table = select_folds(table, folds)
        pair_sets = []
        for text in sets:
            label, spec = labelled(text)
            if label is None:
                raise UserError(f"--set {text!r}: write LABEL=A or LABEL=A,B (e.g. N-O=clean.parquet,occ.parquet)")
            parts = [s for s in spec.split(",") if s]
            if len(parts) not in (1, 2):
                raise UserError(f"--set {text!r}: give one or two sources after the label")
            pair_sets.append(PairSet(label, src.get(parts[0]), src.get(parts[-1])))
        for path in embeddings:
            emb = src.get(path)
            pair_sets.append(PairSet(_stem(path), emb, emb))
        if not pair_sets and model and Path(pairs).is_dir():
            emb = src.get(pairs)
            # PartialLFW pools the centered and non-centered manifests into one row set per model
            label = _stem(model) if protocol == "partiallfw" else _stem(pairs)
            pair_sets.append(PairSet(label, emb, emb))
        if not pair_sets:
            raise UserError(
                "nothing to evaluate the pairs on: give --embeddings, --set, or --model with a pairs manifest"
            )
        ready = PreparedPairs.of(table)  # once for every set scored on these pairs
        for ps in pair_sets:
            verification.extend(evaluate_set(ready, ps, metric, fars, boot))
    if crop and not bins:
        raise UserError("--crop applies to the faces of --bin sets; give --bin lfw.bin")
    for text in bins:
        label, path = labelled(text)
        if factory is None:
            raise UserError(f"--bin {path}: give --model to embed its faces")
        src.runner = src.runner or factory()
        verification.extend(evaluate_bin(Path(path), label, src.runner, crop, folds, metric, fars, boot))
    if gallery:
        if not probes:
            raise UserError("--gallery needs --probes (the faces to identify)")
        g = src.get(gallery)
        if gallery_keys:
            g = g.subset(g.find(read_key_list(gallery_keys), None, "gallery keys"))
        d = [src.get(p) for p in distractors]
        for text in probes:
            label, path = labelled(text)
            p = src.get(path)
            if probe_keys:
                p = p.subset(p.find(read_key_list(probe_keys), None, "probe keys"))
            identification.append(identify(label or _stem(path), g, p, d, metric, boot))
    elif probes or distractors:
        raise UserError("--probes/--distractors need --gallery")
    if not verification and not identification:
        raise UserError(
            "nothing to evaluate: give --pairs with --embeddings/--set/--model, --bin with --model, "
            "or --gallery with --probes"
        )
    info = {
        "metric": metric,
        "pairs": ", ".join(pairs_list + bins) or None,
        "crop": crop,
        "folds": list(folds) or None,
        "model": model,
        "flip": model_settings["flip"] if model else None,
    }
    partial = partiallfw_summary(verification) if protocol == "partiallfw" else []
    if protocol == "partiallfw" and not partial:
        raise UserError(
            "--protocol partiallfw: these pairs hold no PartialLFW protocols; build them with `occgen partial`"
        )
    text = write_report(out, verification, identification, {k: v for k, v in info.items() if v is not None}, partial)
    click.echo(text, nl=False)
    plots = ", ".join(str(out / p) for p in json.loads((out / "results.json").read_text())["plots"])
    click.echo(f"-> {out}/results.md, results.json" + (f"; plots {plots}" if plots else ""))
