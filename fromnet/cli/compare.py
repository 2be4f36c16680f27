"""`fromnet compare`: several models (each one or more seeds) on the same pairs and probes, with paired intervals."""

from __future__ import annotations

from pathlib import Path

import click

from fromnet.cli import main
from fromnet.cli.embed import ModelRunner, model_options
from fromnet.cli.eval import Sources, labelled, scoring_options
from occgen.errors import UserError


def _models(specs: tuple[str, ...], what: str) -> dict[str, list[str]]:
    """'NAME=A,B' -> {NAME: [A, B]}; names unique."""
    out: dict[str, list[str]] = {}
    for text in specs:
        name, paths = labelled(text)
        parts = [p for p in paths.split(",") if p]
        if name is None or not parts:
            raise UserError(f"{what} {text!r}: write NAME=PATH or NAME=PATH1,PATH2,... (one path per seed)")
        if name in out:
            raise UserError(f"{what}: the name {name} is given twice; each model needs its own name")
        out[name] = parts
    return out


class Saved:
    """Embeddings already made: a folder of <manifest name>.parquet files (as `fromnet eval/compare --model`
    save them) or one file that holds every face asked for."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"--embeddings {path}: no such file or folder")
        self._cache: dict[Path, object] = {}

    def get(self, manifest: str):
        from fromnet.eval.pairs import read_embeddings

        file = self.path
        if self.path.is_dir():
            file = self.path / f"{Path(manifest.rstrip('/')).name}.parquet"
            if not file.is_file():
                raise UserError(
                    f"--embeddings {self.path}: no {file.name} for {manifest}; embed it with "
                    f"`fromnet embed --shards {manifest} --out {file}`"
                )
        if file not in self._cache:
            self._cache[file] = read_embeddings(file)
        return self._cache[file]


@main.command("compare")
@click.option(
    "--pairs",
    "pairs_list",
    multiple=True,
    help="A pairs manifest (manifests/NAME from `occgen build --pairs` / `--pairs all` / `occgen partial`); "
    "repeatable: one set each, both faces of a pair from that manifest.",
)
@click.option(
    "--model",
    "model_specs",
    multiple=True,
    metavar="NAME=RUN[,RUN...]",
    help="A model to embed the sets with: fromnet run folders or checkpoints (or onnx:PATH), one per training "
    "seed; repeatable.",
)
@click.option(
    "--embeddings",
    "embedding_specs",
    multiple=True,
    metavar="NAME=PATH[,PATH...]",
    help="A model given by embeddings already made, one PATH per seed: a folder of <manifest name>.parquet "
    "files (what --model saves under OUT/models/NAME/<i>/embeddings/) or one file with every face.",
)
@click.option("--reference", help="The model the others are compared with (default: the first given).")
@click.option("--gallery", help="Identification gallery: a manifest (its faces embedded by each model).")
@click.option("--probes", multiple=True, metavar="[LABEL=]MANIFEST", help="Identification probes (repeatable).")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for compare.md, compare.json, differences.png (and the embeddings --model makes).",
)
@scoring_options
@model_options
def compare_cmd(
    pairs_list, model_specs, embedding_specs, reference, gallery, probes, out, metric, fars, boot, model_settings
) -> None:
    """Score two or more models on exactly the same pairs and probes; give each difference against --reference
    with its paired-bootstrap 95 % interval and a verdict (better / worse / within noise).

    \b
    Examples:
      fromnet compare --pairs manifests/lfw-t10-nn --pairs manifests/lfw-t10-no-2 \\
          --model Baseline-Aug=runs/aug-s0,runs/aug-s1,runs/aug-s2 \\
          --model FROM=runs/from-s0,runs/from-s1,runs/from-s2 --reference Baseline-Aug --out results/compare
      fromnet compare --pairs manifests/lfw-t10-no-2 --embeddings A=emb/a --embeddings B=emb/b --out results/ab
    """
    from fromnet.eval.compare import differences, differences_table, figures, figures_table, plot_differences
    from fromnet.eval.identification import IdentificationResult, identify
    from fromnet.eval.pairs import read_pairs_manifest
    from fromnet.eval.report import bootstrap_line
    from fromnet.eval.verification import DEFAULT_FARS, PairSet, PreparedPairs, VerificationResult, evaluate_set
    from occgen.writer import atomic_write, json_bytes

    runs, saved = _models(model_specs, "--model"), _models(embedding_specs, "--embeddings")
    if set(runs) & set(saved):
        raise UserError(f"model {sorted(set(runs) & set(saved))[0]} is given by both --model and --embeddings")
    names = [*runs, *saved]
    if len(names) < 2:
        raise UserError("compare needs at least two models (--model NAME=RUN or --embeddings NAME=PATH)")
    reference = reference or names[0]
    if reference not in names:
        raise UserError(f"--reference {reference}: not one of the models ({', '.join(names)})")
    if not pairs_list and not gallery:
        raise UserError("nothing to compare on: give --pairs manifests and/or --gallery with --probes")
    if bool(gallery) != bool(probes):
        raise UserError("--gallery and --probes go together")
    fars = tuple(fars) or DEFAULT_FARS
    tables = {p: PreparedPairs.of(read_pairs_manifest(Path(p))) for p in pairs_list}  # once for all models

    def score(source) -> list[VerificationResult | IdentificationResult]:
        results: list[VerificationResult | IdentificationResult] = []
        for path, table in tables.items():
            emb = source.get(path)
            results.extend(evaluate_set(table, PairSet(Path(path.rstrip("/")).name, emb, emb), metric, fars, boot))
        if gallery:
            g = source.get(gallery)
            for text in probes:
                label, path = labelled(text)
                results.append(identify(label or Path(path.rstrip("/")).name, g, source.get(path), [], metric, boot))
        return results

    scored: dict[str, list[list]] = {name: [] for name in names}
    for name, paths in runs.items():
        for i, run in enumerate(paths):
            factory = lambda run=run: ModelRunner(run, model_settings)  # noqa: E731
            scored[name].append(score(Sources(factory, out / "models" / name / str(i))))
    for name, paths in saved.items():
        scored[name] = [score(Saved(p)) for p in paths]
    figs = figures({n: scored[n] for n in names}, boot.level)
    diffs = differences(figs, reference, boot.level)
    line = bootstrap_line([r for seeds in scored.values() for results in seeds for r in results])
    models_text = "\n".join(f"- {n}: {', '.join(runs.get(n) or saved[n])}" for n in names)
    text = (
        f"# Comparison against {reference}\n\n{models_text}\n\n"
        + (
            f"Intervals: {line}; a model of several seeds is the mean over them, in each resample too.\n\n"
            if line
            else ""
        )
        + "## Differences\n\n"
        + "\n".join(f"- {d.set}, {d.metric}: {d.line()}" for d in diffs)
        + "\n\n"
        + differences_table(diffs)
        + "\n\n## Figures\n\n"
        + figures_table(figs)
        + "\n"
    )
    if plot_differences(diffs, out / "differences.png"):
        text += "\n![differences](differences.png)\n"
    atomic_write(out / "compare.md", text.encode())
    atomic_write(
        out / "compare.json",
        json_bytes(
            {
                "reference": reference,
                "models": {n: runs.get(n) or saved[n] for n in names},
                "metric": metric,
                "bootstrap": {"resamples": boot.resamples, "seed": boot.seed, "level": boot.level, "unit": "identity"},
                "figures": [f.to_json() for f in figs],
                "differences": [d.to_json() for d in diffs],
            }
        ),
    )
    click.echo(text, nl=False)
    click.echo(f"-> {out}/compare.md, compare.json, differences.png")
