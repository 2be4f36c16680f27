"""Experiment: the FROM paper's Table 5 at CPU scale, with held-out people, intervals and several seeds.

The paper's two stages on LFW people, scored on other LFW people:

- split: a seeded 30 % of the LFW people with at least 2 images are the test side (504 people); the training side
  is every other person with at least 2 images (1,176 people, 5,651 images); no one is on both sides.
- stage 1, once per seed: the Baseline (config stage1-baseline) on the training people's clean faces.
- stage 2, from that checkpoint, on Mix data of the same people (a third clean, the rest occluded at s drawn from
  1:0.5:5, pattern labels at K = 5), with the same budget each: Baseline-Aug, Baseline-MD and FROM (configs
  stage2-*), and the attention variant (config attention).
- scored on all-pairs sets of the test people (the same at most 5 images a person in every set): clean N-N, N-O
  at s = 1, 2, 3, O-O at s = 2, N-O with the occluder on each of the nine named regions, and the paper's Table 9
  at CPU scale (tools/exp_table9_sets.py: N-O with MaskTheFace masks, LFW-SM style, and the four O_LFW-style
  groups); accuracy and TAR at FAR 1e-3 and 1e-4, with 95 % intervals that resample people; `fromnet compare`
  gives every model's difference from Baseline-Aug with its paired interval, over all finished seeds;
  PartialLFW-style sets of 50 + 50 pairs of test people for Baseline-Aug, FROM and the attention variant (the
  first finished seed: each set crops every face nine ways).

Every model is r18 at quarter width (CPU-sized; the paper trains r50 on CASIA-WebFace for 40 + 40 epochs at
batch 512), batch 64, stage 1 at lr 0.1 and stage 2 at lr 0.01, each lr divided by 10 at the milestones. The
default budget (stage 1: 4 epochs, lr / 10 at 3; stage 2: 2 epochs each, lr / 10 at 1) is sized for 3 seeds in
under 2 hours on a quiet 2-core CPU: 79k training samples a seed at ~80 images/s (r18 x0.25), and ~27k faces a
model and seed to embed at ~220 faces/s once the shared clean faces are reused. A work folder keeps the budget it
started with (budget.json).

    python tools/exp_table5.py --work /tmp/exp-table5 --seeds 0,1,2
    python tools/exp_table5.py --work /tmp/exp-table5 --seeds 0 --report-only   # table of what has finished

Every step is skipped when its output exists (sets, runs marked done, embeddings), and an unfinished training run
continues with `fromnet train --resume`: rerun the same command to go on, or give other --seeds to run in parts.
Writes WORK/table5.md, WORK/table5.json, WORK/times.json, the compare folders and, with --docs, the plots to docs/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from exp_table9_sets import GROUPS, table9_sets_all
from expcommon import LFW, REPO, run

SETS = ["nn", "no-1", "no-2", "no-3", "oo-2"]
REGIONS = [
    "left_eye",
    "right_eye",
    "eyes",
    "nose",
    "mouth",
    "lower_face",
    "upper_face",
    "left_face",
    "right_face",
]
SET_NAMES = {"nn": "clean (N-N)", "no-1": "N-O s=1", "no-2": "N-O s=2", "no-3": "N-O s=3", "oo-2": "O-O s=2"}
#: The paper's Table 9 at CPU scale (tools/exp_table9_sets.py): masked faces and the four O_LFW-style groups, N-O.
TABLE9 = ["t9-lfw-sm", *(f"t9-olfw-{g}" for g in GROUPS)]
TABLE9_NAMES = {"t9-lfw-sm": "LFW-SM masked", **{f"t9-olfw-{g}": f"O_LFW {g}" for g in GROUPS}}
#: Every set is drawn with this seed: the same at most --per-person faces of each test person in all of them.
TEST_SEED = "100"
#: label: (shipped config, run folder name); "Baseline" is the stage-1 run itself.
STAGE2 = {
    "Baseline-Aug": ("stage2-baseline-aug", "aug"),
    "Baseline-MD": ("stage2-md", "md"),
    "FROM": ("stage2-from", "from"),
    "Attention": ("attention", "attention"),
}
MODELS = ["Baseline", *STAGE2]
REFERENCE = "Baseline-Aug"
PARTIAL_MODELS = ["Baseline-Aug", "FROM", "Attention"]


class Experiment:
    """Paths and commands of one work folder; each step skips what is already there."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.work
        self.manifests, self.shards = self.work / "manifests", self.work / "shards"
        bin_dir = Path(sys.executable).parent
        self.occgen, self.fromnet = str(bin_dir / "occgen"), str(bin_dir / "fromnet")
        self.times_file = self.work / "times.json"
        self.times: dict[str, float] = json.loads(self.times_file.read_text()) if self.times_file.is_file() else {}
        self.lock = threading.Lock()  # stage-2 runs may go in parallel (--parallel)

    def timed(self, name: str, *cmd: str) -> None:
        """Run a command and record its wall time under `name` (kept across parts of the experiment)."""
        began = time.perf_counter()
        run(*cmd)
        with self.lock:  # re-read first: another part of the experiment may run at the same time
            if self.times_file.is_file():
                self.times.update({k: v for k, v in json.loads(self.times_file.read_text()).items() if k != name})
            self.times[name] = round(time.perf_counter() - began, 1)
            self.work.mkdir(parents=True, exist_ok=True)
            self.times_file.write_text(json.dumps(self.times, indent=1, sort_keys=True) + "\n")

    # -- data -------------------------------------------------------------------------------------------------

    def split(self) -> tuple[Path, Path]:
        """occgen split (seeded share), then the training side narrowed to people with 2+ images."""
        folder = self.work / "split"
        if not (folder / "split.json").is_file():
            run(
                self.occgen,
                "split",
                "--src",
                str(LFW),
                "--test-share",
                str(self.args.test_share),
                "--min-test-images",
                "2",
                "--seed",
                "0",
                "--out",
                str(folder),
            )
        train = folder / "train-2plus.txt"
        if not train.is_file():
            people = [p for p in (folder / "train.txt").read_text().split("\n") if p]
            kept = [p for p in people if sum(1 for _ in (LFW / p).glob("*.jpg")) >= 2]
            train.write_text("\n".join(kept) + "\n")
        return train, folder / "test.txt"

    def built(self, name: str) -> bool:
        """A set is finished when its dataset card is there: occgen writes it last."""
        return (self.manifests / name / "README.md").is_file()

    def build(self, name: str, *options: str, command: str = "build") -> Path:
        """`occgen build` (or `occgen partial`) of LFW faces into manifests/NAME, unless it is there."""
        if not self.built(name):
            self.timed(
                f"build {name}",
                self.occgen,
                command,
                "--src",
                str(LFW),
                "--name",
                name,
                "--out",
                str(self.shards),
                "--manifests",
                str(self.manifests),
                "-q",
                *options,
            )
        return self.manifests / name

    def partial_pairs(self, test: Path) -> Path:
        """An LFW-style list of 50 same + 50 different pairs of test people (seeded), for occgen partial."""
        path = self.work / "partial-pairs.txt"
        if path.is_file():
            return path
        rng = random.Random(0)
        people = {p: sorted(x.name for x in (LFW / p).glob("*.jpg")) for p in test.read_text().split() if p}
        names = sorted(people)
        number = {p: [int(f.rsplit("_", 1)[1].split(".")[0]) for f in files] for p, files in people.items()}
        same = []
        for p in rng.sample(names, 50):
            a, b = sorted(rng.sample(number[p], 2))
            same.append(f"{p}\t{a}\t{b}")
        different = []
        for _ in range(50):
            p, q = rng.sample(names, 2)
            different.append(f"{p}\t{rng.choice(number[p])}\t{q}\t{rng.choice(number[q])}")
        path.write_text("1\t50\n" + "\n".join(same + different) + "\n")
        return path

    def data(self) -> tuple[Path, Path, list[Path], list[Path]]:
        """Training sets (clean; Mix) and test sets (all-pairs; partial)."""
        train, test = self.split()
        ids = ["--identities", str(train)]
        clean = self.build("train-clean", *ids, "--clean-ratio", "1")
        mix = self.build("train-mix", *ids, "--clean-ratio", "0.3333", "--scales", "1:0.5:5", "--K", "5", "--seed", "1")
        per = str(self.args.per_person)
        pairs = ["--identities", str(test), "--pairs", "all", "--max-per-identity", per, "--seed", TEST_SEED]
        sets = [self.build("t-nn", *pairs, "--clean-ratio", "1")]
        for s in (1, 2, 3):
            sets.append(self.build(f"t-no-{s}", *pairs, "--scales", str(s)))
        sets.append(self.build("t-oo-2", *pairs, "--scales", "2", "--both"))
        if not all(self.built(f"t-region-{r}") for r in REGIONS):
            self.build("t-region", *pairs, "--regions")
        sets += [self.manifests / f"t-region-{r}" for r in REGIONS]
        began, missing = time.perf_counter(), not all(self.built(name) for name in TABLE9)
        table9 = table9_sets_all(
            test, self.work, self.args.per_person, int(TEST_SEED), manifests=self.manifests, shards=self.shards
        )
        if missing:  # a skipped build is no time of the experiment's
            self.times["build t9"] = round(time.perf_counter() - began, 1)
        sets += [table9[name] for name in TABLE9]
        small = self.partial_pairs(test)
        partial = [
            self.build(name, "--pairs", str(small), *extra, command="partial")
            for name, extra in (("t-partial", []), ("t-partial-c", ["--centered"]))
        ]
        return clean, mix, sets, partial

    # -- training ---------------------------------------------------------------------------------------------

    def train(self, name: str, out: Path, *options: str) -> None:
        """One run: skipped when marked done, resumed when started, else started; marked done with its time."""
        done = out / "done.json"
        if done.is_file():
            return
        common = ["--workers", str(self.args.workers), "--log-every", "20", "--ckpt-every", "100"]
        if (out / "checkpoints" / "latest").is_file():
            self.timed(f"train {name} (resumed)", self.fromnet, "train", "--resume", "--out", str(out), *common)
        else:  # never started, or stopped before its first checkpoint: (re)start it
            again = ["--overwrite"] if (out / "config.toml").is_file() else []
            self.timed(f"train {name}", self.fromnet, "train", *options, *common, *again, "--out", str(out))
        seconds = sum(v for k, v in self.times.items() if k.startswith(f"train {name}"))
        done.write_text(json.dumps({"seconds": seconds}) + "\n")

    def check_budget(self) -> None:
        """A work folder holds runs of one training budget: resumed runs keep the settings they started with."""
        a = self.args
        keys = ("width_mult", "batch_size", "stage1_epochs", "stage1_milestones", "stage2_epochs", "stage2_milestones")
        budget = {k: getattr(a, k) for k in keys}
        path = self.work / "budget.json"
        if not path.is_file():
            path.write_text(json.dumps(budget, indent=1) + "\n")
        elif json.loads(path.read_text()) != budget:
            sys.exit(f"{self.work} holds runs of another budget ({path.read_text().strip()}): use another --work")

    def seed(self, seed: int, clean: Path, mix: Path) -> None:
        a = self.args
        size = ["--backbone", "r18", "--width-mult", str(a.width_mult), "--batch-size", str(a.batch_size)]
        runs = self.work / "runs" / f"s{seed}"
        stage1 = runs / "stage1"
        self.train(
            f"s{seed} Baseline",
            stage1,
            "--config",
            "stage1-baseline",
            "--shards",
            str(clean),
            *size,
            "--lr",
            "0.1",
            "--epochs",
            str(a.stage1_epochs),
            "--milestones",
            a.stage1_milestones,
            "--seed",
            str(seed),
        )

        def stage2(label: str) -> None:
            config, folder = STAGE2[label]
            self.train(
                f"s{seed} {label}",
                runs / folder,
                "--config",
                config,
                "--init",
                str(stage1),
                "--shards",
                str(mix),
                *size,
                "--lr",
                "0.01",
                "--epochs",
                str(a.stage2_epochs),
                "--milestones",
                a.stage2_milestones,
                "--seed",
                str(seed),
            )

        with ThreadPoolExecutor(a.parallel) as pool:
            list(pool.map(stage2, [m for m in a.models if m != "Baseline"]))

    def run_folder(self, label: str, seed: int) -> Path:
        folder = "stage1" if label == "Baseline" else STAGE2[label][1]
        return self.work / "runs" / f"s{seed}" / folder

    # -- scoring ----------------------------------------------------------------------------------------------

    def embed(self, label: str, seed: int, sets: list[Path]) -> Path:
        """Embeddings of every face of `sets` by one model (one file per set, skipped when there); a face that an
        earlier file of the model holds (the clean faces all sets share) is taken from it (`--reuse`)."""
        folder = self.work / "embeddings" / label / f"s{seed}"
        for manifest in sets:
            out = folder / f"{manifest.name}.parquet"
            if not out.is_file():
                reuse = [x for f in sorted(folder.glob("*.parquet")) for x in ("--reuse", str(f))]
                self.timed(
                    f"embed s{seed} {label} {manifest.name}",
                    self.fromnet,
                    "embed",
                    "--model",
                    str(self.run_folder(label, seed)),
                    "--shards",
                    str(manifest),
                    "--out",
                    str(out),
                    *reuse,
                    "-q",
                )
        return folder

    def compare(self, name: str, labels: list[str], seeds: list[int], sets: list[Path]) -> dict:
        """fromnet compare on saved embeddings of the finished seeds; recomputed each time (seconds)."""
        out = self.work / name
        shutil.rmtree(out, ignore_errors=True)
        specs = []
        for label in labels:
            folders = [str(self.embed(label, s, sets)) for s in seeds]
            specs += ["--embeddings", f"{label}={','.join(folders)}"]
        self.timed(
            f"{name} ({len(seeds)} seeds)",
            self.fromnet,
            "compare",
            *[x for m in sets for x in ("--pairs", str(m))],
            *specs,
            "--reference",
            REFERENCE,
            "--bootstrap",
            str(self.args.bootstrap),
            "--out",
            str(out),
        )
        return json.loads((out / "compare.json").read_text())


def finished(exp: Experiment, seeds: list[int], labels: list[str]) -> list[int]:
    return [s for s in seeds if all((exp.run_folder(m, s) / "done.json").is_file() for m in labels)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/exp-table5"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS), help="Subset of " + ",".join(MODELS))
    ap.add_argument("--test-share", type=float, default=0.3)
    ap.add_argument("--per-person", type=int, default=5, help="At most this many test images a person.")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--stage1-epochs", type=int, default=4)
    ap.add_argument("--stage1-milestones", default="3")
    ap.add_argument("--stage2-epochs", type=int, default=2)
    ap.add_argument("--stage2-milestones", default="1")
    ap.add_argument("--workers", type=int, default=2, help="Loader processes per training run.")
    ap.add_argument("--parallel", type=int, default=1, help="Stage-2 runs at a time (they share the stage-1 start).")
    ap.add_argument(
        "--threads",
        type=int,
        help="Torch threads per command (OMP_NUM_THREADS; default: the cores / --parallel). Parts of the experiment "
        "run at once (say --train-only beside --report-only) want 1: on 2 cores, two 2-thread training runs "
        "beside an embedding ran 4-5x slower than with 1 thread each.",
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--report-only", action="store_true", help="Only score the seeds whose runs are all done.")
    ap.add_argument("--train-only", action="store_true", help="Only train (score later, e.g. with --report-only).")
    ap.add_argument("--embed-only", action="store_true", help="With --report-only: embed the test sets, no compare.")
    ap.add_argument("--docs", action="store_true", help="Copy the plots to docs/ for the README.")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or REFERENCE not in args.models:
        sys.exit(f"--models: choose among {', '.join(MODELS)}, with {REFERENCE} (the reference); got {unknown}")
    if not LFW.is_dir():
        sys.exit(f"needs {LFW} (the project's shared test data)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.parallel))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # read by every command it runs
    exp = Experiment(args)
    clean, mix, sets, partial = exp.data()
    if not args.report_only:
        exp.check_budget()
        for seed in seeds:
            exp.seed(seed, clean, mix)
        if args.train_only:
            return
    done = finished(exp, seeds, args.models)
    if not done:
        sys.exit("no seed has all its runs done yet")
    if args.embed_only:  # parts of the experiment can embed seeds side by side; compare them all later
        for label in args.models:
            for seed in done:
                exp.embed(label, seed, sets)
        return
    main_cmp = exp.compare("compare", args.models, done, sets)
    part_models = [m for m in PARTIAL_MODELS if m in args.models]
    # the PartialLFW-style sets crop every face nine ways (6,919 faces a set): the first seed only
    part_cmp = exp.compare("compare-partial", part_models, done[:1], partial) if len(part_models) > 1 else None
    report(exp, done, main_cmp, part_cmp)


def set_label(name: str) -> str:
    """'t-no-2 N-O' (compare's set and protocol group) -> 'N-O s=2', 't-region-eyes N-O' -> 'eyes (N-O)',
    't-partial partial-cross ...' -> 'partial partial-cross ...'."""
    base, _, group = name.partition(" ")
    if base in TABLE9_NAMES:
        return f"{TABLE9_NAMES[base]} (N-O)"
    base = base.removeprefix("t-")
    if base.startswith("region-"):
        return f"{base.removeprefix('region-')} (N-O)"
    return SET_NAMES.get(base, base) + (f" {group}" if group not in ("", "N-N", "N-O", "O-O") else "")


def cell(f: dict | None) -> str:
    """'81.2 [79.0, 83.3] sd 0.9': mean over seeds, bootstrap interval over people, spread over seeds."""
    if f is None or f["value"] is None:
        return "n/a"
    text = f"{100 * f['value']:.1f}"
    if f["low"] is not None:
        text += f" [{100 * f['low']:.1f}, {100 * f['high']:.1f}]"
    if f["std"] is not None:
        text += f" sd {100 * f['std']:.1f}"
    return text


def diff_cell(d: dict | None) -> str:
    if d is None or d["value"] is None:
        return "n/a"
    ci = f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]" if d["low"] is not None else ""
    return f"{100 * d['value']:+.1f}{ci} {'=' if d['verdict'] == 'within noise' else d['verdict']}"


def grid(figs: list[dict], models: list[str], metric: str, fmt) -> str:
    """Markdown table: one row per set, one column per model, of `metric`."""
    sets = list(dict.fromkeys(f["set"] for f in figs if f["metric"] == metric))
    by = {(f["set"], f["model"]): f for f in figs if f["metric"] == metric}
    lines = ["| set | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for s in sets:
        lines.append(f"| {set_label(s)} | " + " | ".join(fmt(by.get((s, m))) for m in models) + " |")
    return "\n".join(lines)


def plot_regions(figs: list[dict], models: list[str], path: Path) -> None:
    """Accuracy per occluded region and model (the paper's Fig. 1 bar chart), bars: 95 % interval over people."""
    from fromnet.eval.report import pyplot, save

    plt = pyplot()
    by = {(f["set"].split(" ")[0], f["model"]): f for f in figs if f["metric"] == "accuracy"}
    every = [f"t-{s}" for s in SETS] + [f"t-region-{r}" for r in REGIONS] + TABLE9
    sets = [s for s in every if any(k[0] == s for k in by)]
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=120)
    width = 0.8 / len(models)
    for m, model in enumerate(models):
        rows = [(i, by[(s, model)]) for i, s in enumerate(sets) if (s, model) in by and by[(s, model)]["value"]]
        xs = [i + (m - (len(models) - 1) / 2) * width for i, _ in rows]
        ys = [100 * f["value"] for _, f in rows]
        err = [[100 * (f["value"] - f["low"]) for _, f in rows], [100 * (f["high"] - f["value"]) for _, f in rows]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=model)
    ax.set_xticks(range(len(sets)), [set_label(s) for s in sets], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("verification accuracy %")
    ax.set_ylim(50, 100)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(models))
    ax.set_title("Held-out LFW people: accuracy per set (mean over seeds; bars: 95 % interval over people)", fontsize=9)
    save(fig, path)


def report(exp: Experiment, seeds: list[int], main_cmp: dict, part_cmp: dict | None) -> None:
    """table5.md and table5.json from the compare outputs, and the plots (copied to docs/ with --docs)."""
    work, models = exp.work, exp.args.models
    figs, diffs = main_cmp["figures"], main_cmp["differences"]
    others = [m for m in models if m != REFERENCE]
    diff_figs = [{**d, "std": None} for d in diffs]
    wall = sum(exp.times.values())
    parts = [
        f"# Table 5 at CPU scale: seeds {', '.join(map(str, seeds))}\n",
        f"Mean over {len(seeds)} seed(s) [95 % interval over people] sd over seeds, in %. "
        f"Wall time of all steps so far: {wall / 60:.0f} min (times.json).\n",
        "## Verification accuracy\n",
        grid(figs, models, "accuracy", cell),
        "\n## TAR at FAR = 1e-3\n",
        grid(figs, models, "TAR@FAR=0.001", cell),
        "\n## TAR at FAR = 1e-4\n",
        grid(figs, models, "TAR@FAR=0.0001", cell),
        f"\n## Accuracy difference against {REFERENCE} (points, paired 95 % interval; '=' within noise)\n",
        grid(diff_figs, others, "accuracy", diff_cell),
        f"\n## TAR@FAR=1e-4 difference against {REFERENCE}\n",
        grid(diff_figs, others, "TAR@FAR=0.0001", diff_cell),
    ]
    if part_cmp:
        pm = list(part_cmp["models"])
        parts += [
            "\n## PartialLFW-style sets of test people (accuracy %)\n",
            grid(part_cmp["figures"], pm, "accuracy", cell),
            f"\n### Difference against {REFERENCE}\n",
            grid(
                [{**d, "std": None} for d in part_cmp["differences"]],
                [m for m in pm if m != REFERENCE],
                "accuracy",
                diff_cell,
            ),
        ]
    (work / "table5.md").write_text("\n".join(parts) + "\n")
    (work / "table5.json").write_text(
        json.dumps({"seeds": seeds, "times": exp.times, "compare": main_cmp, "partial": part_cmp}, indent=1) + "\n"
    )
    plot_regions(figs, models, work / "table5-accuracy.png")
    if exp.args.docs:
        shutil.copy(work / "table5-accuracy.png", REPO / "docs" / "table5-accuracy.png")
        shutil.copy(work / "compare" / "differences.png", REPO / "docs" / "table5-differences.png")
    print((work / "table5.md").read_text())


if __name__ == "__main__":
    main()
