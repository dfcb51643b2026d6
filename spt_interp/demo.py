"""The whole SPT loop in one call: locate, knockout, mask, tune (SPT, SFT, random-K), report.

Every stage is a function of the library; this module only chains them, writes each stage's
files under one folder and renders DIR/report.md. On the built-in organism it runs in minutes on
a laptop CPU; ``model`` / ``data`` point it at any local checkpoint and dialogue data instead.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.errors import SptInterpError
from spt_interp.tuning.config import COMPARED_MODES, DEMO_MODES, LR_GRID

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

STAGES = ("organism", "locate", "knockout", "mask", "tune", "report")


@dataclass
class DemoSettings:
    """Sizes of each stage; the defaults are the organism demo's."""

    locate_pairs: int = 64
    knockout_ks: tuple[int, ...] = (1, 2, 4, 8, 16)
    knockout_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    top_k: int = 4
    modes: tuple[str, ...] = DEMO_MODES
    lrs: tuple[float, ...] = LR_GRID
    steps: int = 100
    batch_size: int = 16
    test_limit: int | None = None
    general_limit: int | None = None
    max_new_tokens: int = 16
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def parse_modes(text: str) -> tuple[str, ...]:
    """Return the modes of a list like "spt,random"; raise naming a bad entry."""
    modes = tuple(entry for entry in text.replace(" ", "").split(",") if entry)
    for mode in modes:
        if mode not in COMPARED_MODES:
            raise SptInterpError(
                f"--modes: unknown mode {mode!r} in {text!r}; "
                f"choose from {', '.join(COMPARED_MODES)}"
            )
    if not modes or len(set(modes)) != len(modes):
        raise SptInterpError(f"--modes {text!r}: give each mode once, e.g. spt,random")
    return modes


def parse_rates(text: str) -> tuple[float, ...]:
    """Return the learning rates of a list like "1e-4,1e-3"; raise naming a bad entry."""
    rates = []
    for entry in (e for e in text.replace(" ", "").split(",") if e):
        try:
            rate = float(entry)
        except ValueError:
            rate = float("nan")
        if not 0 < rate < 1:  # also false for NaN
            raise SptInterpError(f"--lrs: bad learning rate {entry!r} in {text!r}; e.g. 1e-4,1e-3")
        rates.append(rate)
    if not rates:
        raise SptInterpError(f"--lrs {text!r}: give at least one learning rate")
    return tuple(sorted(set(rates)))


@dataclass
class DemoInputs:
    """Where the model and the three splits come from (checked before any heavy work)."""

    model: Path
    train: Path
    test: Path
    general: Path | None
    neutral_text: Path | None = None
    suite: Path | None = None


def resolve_data(data: Path) -> tuple[Path, Path, Path | None]:
    """Return (train, test, general) files from a folder holding train.jsonl and test.jsonl."""
    if not data.exists():
        raise SptInterpError(f"--data {data} does not exist")
    if not data.is_dir():
        raise SptInterpError(
            f"--data {data} is a file; give a folder with train.jsonl and test.jsonl "
            "(and optionally general.jsonl)"
        )
    train, test, general = (data / f"{name}.jsonl" for name in ("train", "test", "general"))
    for split in (train, test):
        if not split.is_file():
            raise SptInterpError(f"--data {data} has no {split.name}")
    return train, test, general if general.is_file() else None


def check_inputs(
    model: Path | None,
    data: Path | None,
    neutral_text: Path | None = None,
    suite: Path | None = None,
) -> DemoInputs | None:
    """Return the checked inputs (None = the built-in organism); cheap: no model is loaded."""
    from spt_interp.data import load_dialogues
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.model import check_architecture, check_model_folder

    if (model is None) != (data is None):
        raise SptInterpError("give both --model and --data, or neither (the built-in organism)")
    if model is None or data is None:
        if neutral_text is not None or suite is not None:
            raise SptInterpError(
                "--neutral-text and --suite go with --model and --data (the organism's "
                "word-level tokenizer reads only its own data)"
            )
        return None
    if neutral_text is not None:
        load_neutral_text(neutral_text)
    if suite is not None:
        load_suite(suite)
    folder = check_model_folder(model)
    check_architecture(folder)
    train, test, general = resolve_data(data)
    for split in (train, test, general):
        if split is not None:
            load_dialogues(split)  # raises file:line on the first malformed record
    return DemoInputs(folder, train, test, general, neutral_text, suite)


def stage_banner(say: Callable[[str], None], number: int, name: str, detail: str) -> float:
    say(f"[{number}/{len(STAGES)}] {name}: {detail}")
    return time.perf_counter()


def run_demo(
    out: str | Path,
    *,
    model: str | Path | None = None,
    data: str | Path | None = None,
    neutral_text: str | Path | None = None,
    suite: str | Path | None = None,
    settings: DemoSettings | None = None,
    force: bool = False,
    say: Callable[[str], None] = print,
    progress: bool = True,
    device: str | Any = "cpu",
    dtype: Any = None,
) -> dict[str, Any]:
    """Run the loop into ``out`` (written under a temporary name, renamed at the end); return
    the summary that report.md is rendered from. ``device``: where the model and every stage
    run (a torch device or its name; the CLI resolves "auto" before calling). ``dtype``: what
    the model computes in (default float32; head deltas and LoRA factors train in float32,
    SFT in float32 under autocast, and tuned runs are evaluated merged into the weights)."""
    settings = settings or DemoSettings()
    out = Path(out)

    def optional(path: str | Path | None) -> Path | None:
        return Path(path) if path is not None else None

    inputs = check_inputs(optional(model), optional(data), optional(neutral_text), optional(suite))
    reads = [Path(p) for p in (model, data, neutral_text, suite) if p is not None]
    check_out(out, force=force, reads=reads, create_parents=True)
    with staged_folder(out) as staging:
        summary = _run_stages(staging, inputs, settings, say, progress, device, dtype)
        stage_banner(say, 6, "report", "report.md, summary.json and figures")
        write_text_atomic(
            staging / "summary.json", json.dumps(summary, indent=2, default=str) + "\n"
        )
        from spt_interp.viz.demo_report import write_report

        write_report(staging, summary)
    say(f"report: {out / 'report.md'}")
    return summary


def path_patching_scores(
    hooked: HookedModel, test: list, protocol: Any, n_pairs: int, seed: int, progress: bool = True
) -> tuple[list, Any]:
    """Return (pairs, head scores): path patching at END on ``n_pairs`` test records drawn with
    ``seed``, scored by the log-odds (the demo's locate stage; benchmarks reuse it)."""
    from spt_interp.patching import decision_metric, locate_heads
    from spt_interp.patching.inputs import locate_pairs

    sample = random.Random(seed).sample(test, min(n_pairs, len(test)))
    pairs = locate_pairs(hooked, sample, protocol, progress=progress)
    metric = decision_metric("log-odds", hooked.tokenizer, pairs, protocol)
    return pairs, locate_heads(hooked, pairs, metric, method="path", progress=progress)


@dataclass
class _Loaded:
    """Stage 1's result: the inputs, the model (and its untouched reference) and the data."""

    inputs: DemoInputs
    model_name: str
    hooked: HookedModel
    reference: HookedModel
    protocol: Any
    train: list
    test: list
    general: list


def _run_stages(
    root: Path,
    inputs: DemoInputs | None,
    settings: DemoSettings,
    say: Callable[[str], None],
    progress: bool,
    device: str | Any,
    dtype: Any = None,
) -> dict[str, Any]:
    from spt_interp.knockout import knockout_curve, knockout_summary, prepare_knockout
    from spt_interp.mask import HeadMask, MaskSource
    from spt_interp.viz.knockout_report import write_knockout
    from spt_interp.viz.locate_report import write_outputs

    timings: dict[str, float] = {}
    started = stage_banner(say, 1, "model", "the built-in organism" if inputs is None else "local")
    loaded = _load_stage(root, inputs, settings, device, dtype, progress)
    hooked, protocol = loaded.hooked, loaded.protocol
    timings["model"] = time.perf_counter() - started

    started = stage_banner(say, 2, "locate", f"path patching on {settings.locate_pairs} pairs")
    pairs, scores = path_patching_scores(
        hooked, loaded.test, protocol, settings.locate_pairs, settings.seed, progress
    )
    locate_files = write_outputs(scores, root / "locate", top_k=settings.top_k)
    ranking = scores.ranked()
    timings["locate"] = time.perf_counter() - started

    started = stage_banner(say, 3, "knockout", f"top-K vs random-K, K in {settings.knockout_ks}")
    knockout_data = prepare_knockout(hooked, pairs, method="mean")
    ks = [k for k in settings.knockout_ks if k <= len(ranking)]
    table = knockout_curve(
        hooked, knockout_data, ranking, ks, random_seeds=settings.knockout_seeds, progress=progress
    )
    knockout_files = write_knockout(table, root / "knockout", title="Mean ablation of top-K heads")
    knockout = {k: knockout_summary(table, k) for k in ks}
    timings["knockout"] = time.perf_counter() - started

    started = stage_banner(say, 4, "mask", f"top {settings.top_k} heads, as the trainer reads it")
    source = MaskSource(method="path", metric="log-odds", data_file_hash=None)
    mask = HeadMask.from_scores(hooked, scores, top_k=settings.top_k, source=source)
    mask.save(root / "mask.json")
    timings["mask"] = time.perf_counter() - started

    started = stage_banner(
        say, 5, "tune", f"{', '.join(settings.modes)} x lr {list(settings.lrs)} (fair sweep)"
    )
    comparison = _tune_stage(root, loaded, mask, settings, progress)
    timings["tune"] = time.perf_counter() - started
    return {
        **_summary(loaded, settings, comparison),
        "top_heads": scores.table.sort_values("rank")
        .head(max(settings.top_k, 8))
        .to_dict("records"),
        "baselines": scores.ranking().get("baseline", {}),
        "knockout": knockout,
        "mask": {"heads": [list(h) for h in mask.head_set], "components": list(mask.components)},
        "table": comparison.table.to_dict("records"),
        "files": {"locate": locate_files, "knockout": knockout_files},
        "timings": timings,
    }


def _load_stage(
    root: Path,
    inputs: DemoInputs | None,
    settings: DemoSettings,
    device: str | Any,
    dtype: Any,
    progress: bool,
) -> _Loaded:
    """Return the model, its reference copy and the data (the organism written first if none)."""
    import torch

    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.model import load_model

    model_name = "the built-in organism (organism/model)" if inputs is None else None
    if inputs is None:
        from spt_interp.organism import write_organism

        write_organism(root / "organism", progress=progress)
        data_dir = root / "organism" / "data"
        inputs = DemoInputs(
            root / "organism" / "model",
            data_dir / "train.jsonl",
            data_dir / "test.jsonl",
            data_dir / "general.jsonl",
        )
    weights = dtype if dtype is not None else torch.float32
    hooked = load_model(inputs.model, device=device, dtype=weights)
    return _Loaded(
        inputs=inputs,
        model_name=model_name or str(inputs.model),
        hooked=hooked,
        reference=load_model(inputs.model, device=device, dtype=weights),
        protocol=protocol_for(hooked),
        train=load_dialogues(inputs.train),
        test=load_dialogues(inputs.test)[: settings.test_limit],
        general=(
            load_dialogues(inputs.general)[: settings.general_limit] if inputs.general else []
        ),
    )


def _tune_stage(
    root: Path, loaded: _Loaded, mask: Any, settings: DemoSettings, progress: bool
) -> Any:
    """Return the fair comparison of the tuning modes, its tables written under root/tune."""
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.experiments.compare import ComparisonPlan, Instruments, compare_modes

    plan = ComparisonPlan(
        modes=settings.modes,
        lrs=settings.lrs,
        steps=settings.steps,
        batch_size=settings.batch_size,
        seed=settings.seed,
        max_new_tokens=settings.max_new_tokens,
    )
    inputs = loaded.inputs
    instruments = Instruments(
        load_neutral_text(inputs.neutral_text) if inputs.neutral_text else None,
        load_suite(inputs.suite) if inputs.suite else None,
    )
    comparison = compare_modes(
        loaded.hooked,
        loaded.reference,
        mask,
        loaded.train,
        loaded.test,
        loaded.general,
        loaded.protocol,
        plan,
        progress=progress,
        instruments=instruments,
    )
    root.joinpath("tune").mkdir()
    comparison.table.to_csv(root / "tune" / "comparison.csv", index=False)
    comparison.sweep.to_csv(root / "tune" / "sweep.csv", index=False)
    return comparison


def _summary(loaded: _Loaded, settings: DemoSettings, comparison: Any) -> dict[str, Any]:
    """Return the summary's fields about the model, the data, the settings and the protocol."""
    inputs, hooked = loaded.inputs, loaded.hooked
    counts = {k: v for k, v in comparison.extra.items() if k != "kl_text"}
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": loaded.model_name,
        "geometry": hooked.geometry.as_dict(),
        "device": str(hooked.device),
        "dtype": str(hooked.dtype).removeprefix("torch."),
        "data": {
            "train": str(inputs.train),
            "test": str(inputs.test),
            "general": str(inputs.general),
            "neutral_text": str(inputs.neutral_text) if inputs.neutral_text else None,
            "suite": str(inputs.suite) if inputs.suite else None,
        },
        "counts": {
            "train": len(loaded.train),
            "test": len(loaded.test),
            "general": len(loaded.general),
            **counts,
        },
        "kl_text": comparison.extra["kl_text"],
        "settings": asdict(settings),
        "protocol": comparison.protocol,
    }
