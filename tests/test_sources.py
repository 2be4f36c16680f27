"""Source listings held as arrays (occgen.occlude.sources): order, identities, repeated keys and lines, against
the one-Python-tuple-per-input listing they replace."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest

from occgen.occlude import sources
from occgen.occlude.plan import sample_key
from occgen.occlude.sources import from_list, from_tree

#: Names whose path order and component order differ ('-' < '/' < '_'), keys that coincide, numeric identities.
FILES = ["a/b.jpg", "a-c/x.jpg", "a_c/y.jpg", "10/1.jpg", "9/1.jpg", "a/b.png", "a/b c.jpg", "a/b_c.jpg", "a b/c.jpg"]


def tree(root: Path, files: list[str]) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def coarse_key(rel: str, copy: int) -> str:
    """A sample key that makes paths collide (real keys carry a hash of the path, so they almost never do)."""
    return sample_key(rel.rsplit(".", 1)[0].replace(" ", "_"), copy)


def reference(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, int, str]], list[tuple[str, str]]]:
    """The listing as it was made before: first input of each sample key kept, identities numbered in order."""
    first: dict[str, str] = {}
    unique, skipped = [], []
    for rel, name in pairs:
        other = first.setdefault(coarse_key(rel, 0), rel)
        if other == rel:
            unique.append((rel, name))
        else:
            skipped.append((rel, f"maps to the same sample key as {other}; rename one of them"))
    names = {n for _, n in unique}
    key = (lambda n: (int(n), n)) if all(n.lstrip("-").isdigit() for n in names) else (lambda n: (0, n))
    index = {n: i for i, n in enumerate(sorted(names, key=key))}
    return [(rel, index[n], n) for rel, n in unique], skipped


@pytest.mark.parametrize("chunk", [2, 65_536])
def test_tree_listing_equals_the_sorted_tuple_listing(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(sources, "_CHUNK", chunk)
    monkeypatch.setattr(sources, "sample_key", coarse_key)
    source = from_tree(tree(tmp_path, FILES))
    items, skipped = reference(sorted((rel, rel.split("/")[0]) for rel in FILES))
    assert [(it.rel, it.identity, it.identity_name) for it in source.items] == items
    assert list(source.skipped) == skipped and len(skipped) == 2  # a/b.png after a/b.jpg, a/b_c.jpg after a/b c.jpg
    assert source.items[3].rel == items[3][0] and len(source.items) == len(items)


def test_list_listing_keeps_first_lines_and_reports_repeats_and_missing_in_line_order(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_CHUNK", 3)
    monkeypatch.setattr(sources, "sample_key", coarse_key)
    root = tree(tmp_path / "faces", FILES)
    lines = ["a/b.jpg 1", "gone/x.jpg 2", "a/./b.jpg 3", "# comment", "", "9/1.jpg 9", "gone/x.jpg 2", "a-c/x.jpg 7"]
    lines += ["a/b.png 1", "a_c/y.jpg 7"]
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(lines) + "\n")
    source = from_list(listed, root)
    assert list(source.skipped) == [
        ("gone/x.jpg", f"listed on line 2 but missing under {root}"),
        ("a/b.jpg", "listed again on line 3 (first on line 1)"),
        ("gone/x.jpg", "listed again on line 7 (first on line 2)"),
        ("a/b.png", "maps to the same sample key as a/b.jpg; rename one of them"),
    ]
    kept = [("a/b.jpg", "1"), ("9/1.jpg", "9"), ("a-c/x.jpg", "7"), ("a/b.png", "1"), ("a_c/y.jpg", "7")]
    items, _ = reference([(posixpath.normpath(r), n) for r, n in kept])
    assert [(it.rel, it.identity, it.identity_name) for it in source.items] == items
