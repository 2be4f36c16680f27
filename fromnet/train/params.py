"""Training settings: one dataclass, filled from defaults < a TOML config < the command line.

The paper's recipes ship as TOML files in ``fromnet/train/configs/`` (``--config stage1-baseline``); any TOML file
with the same flat keys works too. The resolved settings are written to ``RUN/config.toml``, which is itself a valid
``--config``, and a resumed run reads them back and refuses changes that would alter what it computes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from occgen.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRECISIONS = ("fp32", "bf16", "fp16")
CLASSIFIERS = ("full", "sharded")
ORDERS = ("auto", "permutation", "stream")


@dataclass
class TrainConfig:
    """Every setting of a training run. Schedules are in epochs; `steps` only bounds how far this run goes."""

    shards: list[str] = field(default_factory=list)  # manifest folders or plain shards, each optionally SPEC:WEIGHT
    class_field: str = ""  # plain WebDataset shards: the .json field that holds the class; "": their .cls member
    order: str = "auto"  # permutation (random access into local tars) | stream (front-to-back reads) | auto
    stream_buffer: int = 0  # the streamed order's shuffle buffer in samples; 0: chosen from the data
    stream_shards: int = 0  # the streamed order's shards read at once; 0: the default (4)
    out: str = "runs/run"
    variant: str = "from"
    K: int = 5
    backbone: str = "r50"
    width_mult: float = 1.0
    margin: str = "cosface"
    margin_scale: float = 0.0  # the margin's s; 0 keeps the preset's
    lam: float = 1.0  # weight of the pattern (or box) loss, Eq. 6
    lambda_wce: float = 1.0  # attention variant: weight of the weighted cross-entropy
    lambda_div: float = 1.0  # attention variant: weight of the weighted diversity regularizer
    classifier: str = "full"
    batch_size: int = 512  # global, over all processes
    micro_batch: int = 0  # samples per forward pass, gradients accumulated up to batch_size; 0: batch / world size
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 40
    milestones: list[int] = field(default_factory=lambda: [15, 30])  # epochs at which lr is divided by 10
    steps: int = 0  # stop after this global step (0: train all epochs); the schedule does not change
    seed: int = 0
    init: str = ""  # checkpoint (or run folder) whose weights start this run: stage 2 from stage 1
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    clip_grad: float = 0.0  # max global gradient norm; 0: no clipping
    occlude_online: str = ""  # scales for occluding clean shards in the loader, e.g. "1:0.5:5"; "": off
    clean_ratio: float = 1 / 3  # with occlude_online: the share of samples left clean (Mix: 2:1)
    occluders: str = ""  # with occlude_online: occluder library folder; "": the project's own
    flip: bool = True
    workers: int = -1  # loader processes per training process; -1: from the machine's cores (at most 4)
    replicas: int = 0  # data-parallel slices of each global batch; 0: the world size (fixed when the run starts)
    ckpt_every: int = 1000  # steps between checkpoints (epoch ends always write one); 0: only by time
    ckpt_minutes: float = 0.0  # minutes between checkpoints (bounds the work a preemption loses); 0: only by steps
    keep: int = 3  # checkpoints kept
    log_every: int = 10
    log_keys: bool = False  # write every trained-on sample key to RUN/keys/ (audits the data order)
    device: str = "auto"
    val: str = ""  # held-out manifest scored at each epoch end (identity and pattern accuracy)

    def validate(self) -> None:
        from fromnet.losses import MARGIN_PRESETS
        from fromnet.models import BACKBONES, VARIANTS

        checks = [
            (self.variant in VARIANTS, f"--variant {self.variant}: choose one of {', '.join(VARIANTS)}"),
            (self.backbone in BACKBONES, f"--backbone {self.backbone}: choose one of {', '.join(BACKBONES)}"),
            (self.margin in MARGIN_PRESETS, f"--margin {self.margin}: choose one of {', '.join(MARGIN_PRESETS)}"),
            (self.precision in PRECISIONS, f"--precision {self.precision}: choose one of {', '.join(PRECISIONS)}"),
            (self.order in ORDERS, f"--order {self.order}: choose one of {', '.join(ORDERS)}"),
            (
                self.stream_buffer >= 0 and self.stream_shards >= 0,
                "--stream-buffer and --stream-shards must be positive (0: the default)",
            ),
            (self.classifier in CLASSIFIERS, f"--classifier {self.classifier}: choose {' or '.join(CLASSIFIERS)}"),
            (0 < self.width_mult <= 4, f"--width-mult {self.width_mult}: must be in (0, 4]"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be at least 1"),
            (
                self.micro_batch >= 0 and (not self.micro_batch or self.batch_size % self.micro_batch == 0),
                f"--micro-batch {self.micro_batch}: must divide --batch-size {self.batch_size}",
            ),
            (self.ckpt_every >= 0 and self.ckpt_minutes >= 0, "--ckpt-every must be positive"),
            (self.lr > 0, f"--lr {self.lr}: must be positive"),
            (self.epochs >= 1, f"--epochs {self.epochs}: must be at least 1"),
            (self.steps >= 0, f"--steps {self.steps}: must be >= 0"),
            (all(m >= 1 for m in self.milestones), f"milestones {self.milestones}: epochs must be >= 1"),
            (0 <= self.clean_ratio <= 1, f"--clean-ratio {self.clean_ratio}: must be in [0, 1]"),
            (bool(self.shards), "no training data: give --shards manifests/NAME (built by `occgen build`)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Settings of earlier versions that no longer exist, refused with an explanation.
RETIRED = frozenset({"shuffle_buffer", "lanes"})

#: Settings a resumed run may change: they decide how it runs, not what it computes.
RESUMABLE = frozenset(
    {
        "steps",
        "epochs",
        "workers",
        "ckpt_every",
        "ckpt_minutes",
        "keep",
        "log_every",
        "log_keys",
        "device",
        "compile",
        "val",
        "out",
    }
)


def config_path(name: str) -> Path:
    """A shipped config by name (``stage1-baseline``) or a path to any TOML file."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"--config {name}: no such file")
        return path
    shipped = CONFIG_DIR / f"{name}.toml"
    if not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise UserError(f"--config {name}: not a file and not a shipped config ({names})")
    return shipped


def read_toml(path: Path) -> dict[str, Any]:
    """Flat settings from a TOML file, checked against TrainConfig's fields and types."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        hint = "write one setting a line, key = value, strings in double quotes (see fromnet/train/configs/)"
        raise UserError(f"{path}: cannot read as TOML ({exc}); {hint}") from None
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(data) - set(known))
    retired = [k for k in unknown if k in RETIRED]
    if retired:
        raise UserError(
            f"{path}: {', '.join(retired)} belonged to the shuffle-buffer data order, which fromnet replaced by a "
            "full permutation of every epoch; a run started with it cannot resume exactly (start a new one), and a "
            "config file works once these lines are deleted"
        )
    if unknown:
        raise UserError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    defaults = TrainConfig()
    for key, value in data.items():
        expected = type(getattr(defaults, key))
        ok = isinstance(value, expected) or (
            expected is float and isinstance(value, int) and not isinstance(value, bool)
        )
        if not ok:
            raise UserError(f"{path}: {key} = {value!r} should be a {expected.__name__}")
    return data


def write_toml(config: TrainConfig) -> str:
    """The resolved settings as TOML (flat keys, sorted), readable again by ``--config``."""
    lines = ["# fromnet train: the resolved settings of this run (usable as --config)"]
    for key, value in sorted(config.to_dict().items()):
        lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars and lists of them are valid TOML
    return "\n".join(lines) + "\n"


def resolve(config: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the config file's values, then the command line's explicit options."""
    values: dict[str, Any] = {}
    if config:
        values.update(read_toml(config_path(config)))
    values.update(overrides)
    cfg = TrainConfig(**values)
    cfg.milestones = [int(m) for m in cfg.milestones]
    return cfg


def merge_resumed(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A resumed run's settings: the saved ones, plus command-line changes that do not alter the computation."""
    changed = sorted(k for k, v in overrides.items() if k not in RESUMABLE and getattr(saved, k) != v)
    if changed:
        shown = ", ".join(f"{k} ({getattr(saved, k)!r} -> {overrides[k]!r})" for k in changed)
        raise UserError(
            f"--resume continues the run as it was configured; these options differ: {shown}. "
            f"Drop them, or start a new run with another --out"
        )
    values = saved.to_dict()
    values.update({k: v for k, v in overrides.items() if k in RESUMABLE})
    return TrainConfig(**values)
