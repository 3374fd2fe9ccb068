"""FMNIST-5k quality benchmark (../shared/data/README.md): teacher resnet56; resnet8 alone vs distilled, over seeds.

    python bench/fmnist5k.py --data-dir ../shared/data/fashion-mnist                # the full protocol (GPU)
    python bench/fmnist5k.py --data-dir ... --epochs 15 --teacher-epochs 15 --device cpu   # CPU-sized
    python bench/fmnist5k.py --data-dir ... --arms vanilla vanilla@eager                  # the fast path's accuracy

Trains the teacher once (seed 0) with the `fmnist5k-teacher` preset, then for each seed each arm: `student` (the
student alone, `fmnist5k-student`) or a method (`fmnist5k-<method>`), optionally with method options, as in
`pea:sps=false`; all through kdcli's Python API. An arm ending in `@eager` runs on the plain eager loop (fp32, no
compile, no CUDA graphs, no channels-last) instead of the engine's automatic fast path. Prints one JSON line: the
configuration, the teacher's accuracy, and per arm the mean ± std of last-epoch top-1, of the top-1 at the
best-on-val epoch (with --val-split), and the wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

import kdcli
from kdcli.compare import mean_std
from kdcli.config import load_preset, parse_set, resolve

EAGER_ENGINE = {"precision": "fp32", "compile": False, "cuda_graphs": False, "channels_last": False}


def run(preset: str, overrides: dict[str, Any], distill: bool) -> dict[str, Any]:
    config = resolve([(f"preset {preset}", load_preset(preset)), ("bench", overrides)]).config
    started = time.perf_counter()
    result = kdcli.distill(config) if distill else kdcli.train(config)
    final = result.report["final"]
    return {"last": final["last_top1"], "best": final.get("best_top1"), "seconds": time.perf_counter() - started,
            "path": str(result.student_path)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", default="runs/bench-fmnist5k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (preset: 40)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (preset: 40)")
    parser.add_argument("--teacher", default=None, help="an already trained teacher file (skips training one)")
    parser.add_argument("--arms", nargs="+", default=["student", "vanilla"],
                        help="student, or METHOD[:key=value,...] with the fmnist5k-METHOD preset; "
                             "a trailing @eager runs the arm on the plain eager loop")  # fmt: skip
    parser.add_argument("--val-split", type=float, default=0.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    common: dict[str, Any] = {"data": {"dir": args.data_dir, "val_split": args.val_split},
                              "train": {"device": args.device}}  # fmt: skip
    student_train = {**common["train"], **({"epochs": args.epochs} if args.epochs else {})}

    teacher: dict[str, Any]
    if args.teacher:
        teacher = {"path": args.teacher, "seconds": 0.0}
    else:
        teacher_train = {**common["train"], **({"epochs": args.teacher_epochs} if args.teacher_epochs else {})}
        teacher = run("fmnist5k-teacher", {**common, "train": {**teacher_train, "seed": 0},
                                           "output": {"dir": str(out / "teacher")}}, distill=False)  # fmt: skip
    teacher_top1 = kdcli.evaluate([teacher["path"]], data_dir=args.data_dir, device=args.device)["results"][0]["top1"]

    arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    for seed in args.seeds:
        base = {**common, "train": {**student_train, "seed": seed}}
        for arm in args.arms:
            label = arm.replace(":", "-").replace("=", "").replace("@", "-")
            folder = {"output": {"dir": str(out / f"{label}-s{seed}")}}
            name, eager, _ = arm.partition("@eager")
            engine = {"train": {**base["train"], **(EAGER_ENGINE if eager else {})}}
            if name == "student":
                arms[arm].append(run("fmnist5k-student", {**base, **engine, **folder}, distill=False))
                continue
            method, _, options = name.partition(":")
            method_options: dict[str, Any] = {}
            for item in filter(None, options.split(",")):
                method_options.update(parse_set(item))
            teacher_file = {"teacher": {"checkpoint": teacher["path"]}}
            overrides = {**base, **engine, **folder, **teacher_file, "method": method_options}
            arms[arm].append(run(f"fmnist5k-{method}", overrides, distill=True))

    config = resolve([("preset", load_preset("fmnist5k-vanilla")), ("bench", {**common, "train": student_train})])
    print(json.dumps({
        "benchmark": "fmnist5k",
        "kdcli": kdcli.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "seeds": args.seeds,
        "student_epochs": config.config.train.epochs,
        "teacher_epochs": args.teacher_epochs or "preset",
        "val_split": args.val_split,
        "teacher_top1": teacher_top1,
        "teacher_seconds": teacher["seconds"],
        "arms": {name: {"last_top1": mean_std([r["last"] for r in results]),
                        "best_on_val_top1": mean_std([r["best"] for r in results]),
                        "seconds": mean_std([r["seconds"] for r in results]),
                        "runs": [r["last"] for r in results]} for name, results in arms.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
