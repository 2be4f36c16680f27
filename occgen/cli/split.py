"""``occgen split``: a source's people into an identity-disjoint train side and test side."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.errors import UserError
from occgen.occlude.sources import open_source
from occgen.sets.pairs import read_pairs
from occgen.sets.split import split_at_random, split_by_folds, write_split


@main.command("split")
@click.option("--src", required=True, help="Aligned faces, as build's --src (folder, list file, registered name).")
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), help="Folder the list file's paths are relative to."
)
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Split by this LFW-style pairs list's folds: the people of --fold are the test side.",
)
@click.option(
    "--fold",
    "folds",
    multiple=True,
    type=click.IntRange(min=0),
    help="With --pairs: test fold, numbered from 0 as in pairs.parquet and `fromnet eval --fold` "
    "(LFW's tenth fold is 9); repeatable.",
)
@click.option(
    "--test-share",
    type=float,
    help="Random split instead: this share of the people (of those with --min-test-images) is the test side.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random split.")
@click.option(
    "--min-test-images",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Random split: only people with at least this many images can be drawn for the test side "
    "(2: every test person can form a genuine pair).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for train.txt, test.txt (one identity a line) and split.json (how they were made, counts).",
)
def split_cmd(src, root, pairs_file, folds, test_share, seed, min_test_images, out) -> None:
    """Split the people of a source into train and test, with no one on both sides.

    \b
    Examples:
      occgen split --src lfw-112x96 --pairs pairs.txt --fold 9 --out splits/lfw-fold10
      occgen split --src lfw-112x96 --test-share 0.2 --min-test-images 2 --seed 0 --out splits/lfw-r20
    Then: occgen build --src lfw-112x96 --identities splits/lfw-fold10/train.txt ...
    """
    if (pairs_file is None) == (test_share is None):
        raise UserError("give either --pairs pairs.txt with --fold N (split by folds) or --test-share (random split)")
    source = open_source(src, root)
    if pairs_file is not None:
        if not folds:
            raise UserError("--pairs splits by folds: name the test fold(s) with --fold (LFW's tenth is 9)")
        split = split_by_folds(source, read_pairs(pairs_file), list(folds), str(pairs_file))
    else:
        if folds:
            raise UserError("--fold goes with --pairs; a random split takes --test-share and --seed")
        split = split_at_random(source, test_share, seed, min_test_images)
    paths = write_split(split, out)
    for side in ("train", "test"):
        c = split.record[side]
        click.echo(
            f"{side}: {c['identities']:,} people, {c['images']:,} images "
            f"({c['identities_with_2_images']:,} people with 2+ images) -> {paths[side]}"
        )
    click.echo(f"record -> {paths['record']}")
