"""FMNIST-5k quality benchmark (../shared/data/README.md): teacher resnet56; resnet8 alone vs distilled, over seeds.

    python bench/fmnist5k.py --data-dir ../shared/data/fashion-mnist --val-split 0.1 \
        --arms student vanilla pesf skd pea pea:sps=false pea:ptp=false          # the full protocol
    python bench/fmnist5k.py --data-dir ... --teacher T.safetensors --arms vanilla --seeds 0 --device cpu
    python bench/fmnist5k.py --data-dir ... --arms vanilla vanilla@eager                  # the fast path's accuracy

Trains the teacher once (seed 0) with the `fmnist5k-teacher` preset (or takes `--teacher FILE`), then for each seed
each arm: `student` (the student alone, `fmnist5k-student`) or a method (`fmnist5k-<method>`), optionally with method
options, as in `pea:sps=false`; all through kdcli's Python API. An arm ending in `@eager` runs on the plain eager
loop (fp32, no compile, no CUDA graphs, no channels-last) instead of the engine's automatic fast path. `--jobs N`
runs N runs at a time in their own processes (a GPU has room for several of these small runs). With `--results DIR`
each finished run's small files (report.json, metrics.jsonl, config.yaml; never the weights) are copied to
DIR/<arm>-s<seed>/ as soon as it ends, so `kdcli compare DIR/*/` rebuilds the table on any machine.
Prints one JSON line: the configuration, the commit, the teacher's accuracy, and per arm the mean ± std of last-epoch
top-1, of the top-1 at the best-on-val epoch (with --val-split), and the wall time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

import kdcli
from kdcli.cli.options import parse_set
from kdcli.config import load_preset, resolve
from kdcli.reporting.compare import mean_std

EAGER_ENGINE = {"precision": "fp32", "compile": False, "cuda_graphs": False, "channels_last": False}
SMALL_FILES = ("report.json", "report.md", "metrics.jsonl", "config.yaml")


def run(preset: str, overrides: dict[str, Any], distill: bool, threads: int | None) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    config = resolve([(f"preset {preset}", load_preset(preset)), ("bench", overrides)]).config
    started = time.perf_counter()
    result = kdcli.distill(config) if distill else kdcli.train(config)
    final = result.report.final
    return {"last": final.last_top1, "best": final.best_top1, "seconds": time.perf_counter() - started,
            "path": str(result.student_path), "run_dir": str(result.run_dir)}  # fmt: skip


def arm_task(arm: str, seed: int, base: dict[str, Any], out: Path, teacher: str) -> tuple[str, bool, dict[str, Any]]:
    """The preset, overrides and kind of one (arm, seed) run."""
    label = arm.replace(":", "-").replace("=", "").replace(",", "-").replace("@", "-")
    folder = {"output": {"dir": str(out / f"{label}-s{seed}")}}
    name, eager, _ = arm.partition("@eager")
    train = {**base["train"], "seed": seed, **(EAGER_ENGINE if eager else {})}
    if name == "student":
        return "fmnist5k-student", False, {**base, "train": train, **folder}
    method, _, options = name.partition(":")
    method_options: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        method_options.update(parse_set(item))
    overrides = {**base, "train": train, **folder, "teacher": {"checkpoint": teacher}, "method": method_options}
    return f"fmnist5k-{method}", True, overrides


def keep_small_files(run_dir: Path, results: Path) -> None:
    target = results / run_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)


def commit() -> str | None:
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                               cwd=Path(__file__).resolve().parent)  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent).stdout.strip()  # fmt: skip
        return found.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):  # a copy without .git (the GPU machine's): the caller says
        return os.environ.get("KDCLI_COMMIT")


def teacher_epochs(path: str) -> int | str:
    """The epochs a given teacher file was trained for, from the kdcli run's report.json beside it; "file" when that
    is not there (a teacher trained elsewhere)."""
    try:
        return int(json.loads((Path(path).parent / "report.json").read_text())["final"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return "file"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", default="runs/bench-fmnist5k")
    parser.add_argument("--results", default=None, help="copy each finished run's small files here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (preset: 40)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (preset: 40)")
    parser.add_argument("--teacher", default=None, help="an already trained teacher file (skips training one)")
    parser.add_argument("--arms", nargs="+", default=["student", "vanilla"],
                        help="student, or METHOD[:key=value,...] with the fmnist5k-METHOD preset; "
                             "a trailing @eager runs the arm on the plain eager loop")  # fmt: skip
    parser.add_argument("--val-split", type=float, default=0.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = Path(args.results) if args.results else None
    epochs = {"epochs": args.epochs} if args.epochs else {}
    common: dict[str, Any] = {"data": {"dir": args.data_dir, "val_split": args.val_split},
                              "train": {"device": args.device, **epochs}}  # fmt: skip

    teacher: dict[str, Any]
    if args.teacher:
        teacher = {"path": args.teacher, "seconds": 0.0}
    else:
        teacher_train = {"device": args.device, "seed": 0,
                         **({"epochs": args.teacher_epochs} if args.teacher_epochs else {})}  # fmt: skip
        teacher_overrides = {"data": {"dir": args.data_dir}, "train": teacher_train,
                             "output": {"dir": str(out / "teacher")}}  # fmt: skip
        teacher = run("fmnist5k-teacher", teacher_overrides, distill=False, threads=args.threads)
        if results is not None:
            keep_small_files(Path(teacher["run_dir"]), results)
    teacher_top1 = kdcli.evaluate([teacher["path"]], data_dir=args.data_dir, device=args.device)["results"][0]["top1"]

    tasks = [(arm, seed, arm_task(arm, seed, common, out, teacher["path"])) for seed in args.seeds for arm in args.arms]
    arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    failed: dict[str, list[str]] = {}
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = {pool.submit(run, preset, overrides, distill, args.threads): (arm, seed)
                   for arm, seed, (preset, distill, overrides) in tasks}  # fmt: skip
        for future in as_completed(futures):  # each run's files are kept as soon as it ends
            arm, seed = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # one failed run must not take the others' figures with it
                failed.setdefault(arm, []).append(f"seed {seed}: {type(error).__name__}: {error}"[:500])
                continue
            if results is not None:
                keep_small_files(Path(outcome["run_dir"]), results)
            arms[arm].append(outcome)

    config = resolve([("preset", load_preset("fmnist5k-vanilla")), ("bench", common)])
    print(json.dumps({
        "benchmark": "fmnist5k",
        "commit": commit(),
        "kdcli": kdcli.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "jobs": args.jobs,
        "seeds": args.seeds,
        "student_epochs": config.config.train.epochs,
        "teacher_epochs": teacher_epochs(args.teacher) if args.teacher else (args.teacher_epochs or "preset"),
        "val_split": args.val_split,
        "teacher_top1": teacher_top1,
        "teacher_seconds": teacher["seconds"],
        "arms": {name: {"last_top1": mean_std([r["last"] for r in runs]),
                        "best_on_val_top1": mean_std([r["best"] for r in runs]),
                        "seconds": mean_std([r["seconds"] for r in runs]),
                        "runs": [r["last"] for r in runs],
                        **({"failed": failed[name]} if name in failed else {})} for name, runs in arms.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
