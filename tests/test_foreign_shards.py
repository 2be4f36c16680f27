"""Plain WebDataset shards made by other tools: brace patterns, '::' lists, pipe:, file:// and fsspec URLs, classes
from .cls or a JSON field, read as occgen's own shards are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner
from conftest import shared

from fromnet.cli import main as fromnet_main
from fromnet.eval.pairs import read_embeddings
from fromnet.shards import counted, iter_ordered, open_shards, read_manifest, sample_class, shard_urls
from occgen.cli import main as occgen_main
from occgen.errors import UserError


def invoke(cli, *args, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> dict[str, Path]:
    """lfw-mini built by occgen (clean), and the same samples re-packed by webdataset's own TarWriter as another
    tool would write them: KEY.jpeg + KEY.json {"label": identity, "file": src}, 3 shards of 16."""
    root = tmp_path_factory.mktemp("foreign")
    faces = shared("lfw-mini") / "aligned-112x96"
    invoke(occgen_main, "build", "--src", faces, "--clean-ratio", "1", "--out", root / "shards",
           "--manifests", root / "m", "--name", "clean", "-q", "-j", "1", "--shard-size", "20")  # fmt: skip
    samples = list(iter_ordered(read_manifest(root / "m" / "clean")))
    (root / "other").mkdir()
    for n in range(3):
        with wds.TarWriter(str(root / "other" / f"faces-{n:03d}.tar")) as sink:
            for s in samples[16 * n : 16 * n + 16]:
                sink.write({"__key__": s["__key__"], "jpeg": s["jpg"], "json": {"label": int(s["cls"]), "file": "x"}})
    return dict(root=root, manifest=root / "m" / "clean", other=root / "other", samples=samples)


def test_specs_expand_and_classes_come_from_cls_or_json(foreign):
    other = foreign["other"]
    spec = f"{other}/faces-{{000..001}}.tar::file://{other}/faces-002.tar"
    assert shard_urls(spec) == [f"{other}/faces-000.tar", f"{other}/faces-001.tar", f"file://{other}/faces-002.tar"]
    got = list(iter_ordered(open_shards(spec)))
    want = foreign["samples"]
    assert [s["__key__"] for s in got] == [s["__key__"] for s in want]
    assert [sample_class(s, "label") for s in got] == [sample_class(s) for s in want]
    with pytest.raises(UserError, match="no .cls member; name the JSON field"):
        sample_class(got[0])
    with pytest.raises(UserError, match="JSON field 'file' is 'x', not a whole-number class"):
        sample_class(got[0], "file")
    with pytest.raises(UserError, match="2 of 3 shard file"):
        shard_urls(f"{other}/faces-{{002..004}}.tar")
    full = counted(open_shards(spec), "label", jobs=2)  # one pass, two processes
    assert [s.samples for s in full.shards] == [16, 16, 16] and full.num_identities == 12
    assert full.samples == len(want)
    piped = list(iter_ordered(open_shards(f"pipe:cat {other}/faces-001.tar")))  # streamed through tarfile
    assert [s["__key__"] for s in piped] == [s["__key__"] for s in want[16:32]]


def test_fsspec_urls(foreign):
    fsspec = pytest.importorskip("fsspec", reason="fsspec (optional) is not installed")
    with fsspec.open("memory://bucket/faces-000.tar", "wb") as f:
        f.write((foreign["other"] / "faces-000.tar").read_bytes())
    got = list(iter_ordered(open_shards("memory://bucket/faces-{000..000}.tar")))
    assert [s["__key__"] for s in got] == [s["__key__"] for s in foreign["samples"][:16]]
    with pytest.raises(UserError, match="fsspec cannot open it"):
        list(iter_ordered(open_shards("nosuchscheme://x/faces-000.tar")))


def test_embed_plain_shards_equals_the_manifest(foreign, tmp_path):
    import test_eval  # the tiny network's saved run

    model = test_eval.make_run(tmp_path / "run")
    mine, theirs = tmp_path / "mine.parquet", tmp_path / "theirs.parquet"
    invoke(fromnet_main, "embed", "--model", model, "--shards", foreign["manifest"], "--out", mine, "-q")
    spec = f"{foreign['other']}/faces-{{000..002}}.tar"
    out = invoke(fromnet_main, "embed", "--model", model, "--shards", spec, "--out", theirs, "-j", "2").output
    assert "48 faces" in out
    a, b = read_embeddings(mine), read_embeddings(theirs)
    assert list(a.keys) == list(b.keys)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)
    bad = invoke(
        fromnet_main, "embed", "--model", model, "--shards", tmp_path / "x-{0..1}.tar", "--out", mine, ok=False
    )
    assert "do not exist" in bad.output and "Traceback" not in bad.output


def test_train_on_plain_shards(foreign, tmp_path):
    spec = f"{foreign['other']}/faces-{{000..002}}.tar"
    tiny = ["--backbone", "r18", "--width-mult", "0.25", "--batch-size", "4", "--steps", "1", "-j", "0"]
    out = invoke(fromnet_main, "train", "--shards", spec, "--class-field", "label", "--variant", "baseline", *tiny,
                 "--out", tmp_path / "base").output  # fmt: skip
    assert "12 identities" in out and "48 samples" in out
    assert len(list((tmp_path / "base" / "cache").glob("*.counts.json"))) == 1  # a resumed run does not count again
    # pattern-predicting variants need labels: occluded and labelled in the loader, or a clear error
    occ = ["--shards", spec, "--class-field", "label", "--variant", "from", *tiny]
    refused = invoke(fromnet_main, "train", *occ, "--out", tmp_path / "x", ok=False).output
    assert "--occlude-online" in refused and "Traceback" not in refused
    invoke(fromnet_main, "train", *occ, "--occlude-online", "2", "--out", tmp_path / "from")
    for bad, message in (
        (["--shards", spec, "--variant", "baseline"], "no .cls member"),
        (
            [
                "--shards",
                f"pipe:cat {foreign['other']}/faces-000.tar",
                "--variant",
                "baseline",
                "--order",
                "permutation",
                "--class-field",
                "label",
            ],
            "random access",
        ),  # fmt: skip
    ):
        result = invoke(fromnet_main, "train", *bad, *tiny, "--out", tmp_path / "y", ok=False)
        assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["ustar", "pax", "gnu-folders", "gzip", "ustar-then-pax"])
def test_streamed_tars_of_every_kind_read_back_their_members(tmp_path, kind):
    """Pipes parse plain ustar headers directly and hand any other kind (pax, GNU long names, folders, gzip) to
    tarfile from that header on: every kind gives back every member, in order."""
    import io
    import tarfile

    rng = np.random.default_rng(1)
    names = [f"s{i:03d}.{ext}" for i in range(40) for ext in ("jpg", "cls")]
    if kind == "pax":
        names = ["p" * 120 + "/" + n for n in names]  # every header needs a pax record
    if kind == "ustar-then-pax":
        names[60] = "q" * 150 + names[60]  # plain ustar up to here, one pax record, then plain again
    members = [(name, rng.bytes(int(rng.integers(1, 3000)))) for name in names]
    fmt = {"ustar": tarfile.USTAR_FORMAT, "gnu-folders": tarfile.GNU_FORMAT}.get(kind, tarfile.PAX_FORMAT)
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w:gz" if kind == "gzip" else "w", format=fmt) as tar:
        for n, (name, data) in enumerate(members):
            if kind == "gnu-folders" and n % 10 == 0:
                folder = tarfile.TarInfo(f"dir{n}")
                folder.type = tarfile.DIRTYPE
                tar.addfile(folder)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    streamed = list(iter_ordered(open_shards(f"pipe:cat {path}")))
    got = [(f"{s['__key__']}.{ext}", s[ext]) for s in streamed for ext in s if not ext.startswith("__")]
    assert got == members
