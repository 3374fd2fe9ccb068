"""FMNIST-5k quality benchmark (../shared/data/README.md): teacher resnet56; resnet8 alone vs distilled, over seeds —
a thin preset of arms over ``kdcli sweep``.

    python bench/fmnist5k.py --data-dir ../shared/data/fashion-mnist --arms student vanilla pesf skd pea  # protocol
    python bench/fmnist5k.py --data-dir ... --teacher T.safetensors --arms vanilla --seeds 0 --device cpu
    python bench/fmnist5k.py --data-dir ... --arms vanilla pea --grid method.sps=true,false  # pea with and without SPS
    python bench/fmnist5k.py --data-dir ... --device cpu --precision bf16  # a CPU with bf16 units: about twice as fast

Trains the teacher once (seed 0, the ``fmnist5k-teacher`` preset) unless ``--teacher FILE`` gives one, then runs
``kdcli sweep --preset fmnist5k-vanilla`` with the arms (``student`` is the student alone; a method runs with its
shipped defaults) × the seeds into OUT/sweep, resumable: the same command again finishes only what is missing. With
``--results DIR`` each finished run's small files (report.json, report.md, metrics.jsonl, config.yaml; never the
weights) are copied to DIR/<run>/, so ``kdcli compare DIR/*/`` rebuilds the table on any machine. Prints one JSON line:
the configuration, the commit, the teacher's accuracy and epochs, per arm the mean ± std of last-epoch top-1 (and of
the top-1 at the best-on-val epoch, with --val-split), and the sweep's verdict against the student alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
SMALL_FILES = ("report.json", "report.md", "metrics.jsonl", "config.yaml")


def kdcli(*args: str, ok: tuple[int, ...] = (0,), threads: int | None = None) -> dict[str, Any]:
    """``kdcli ARGS --json`` from this checkout; its JSON document (an exit code outside ``ok`` stops the bench).
    ``threads``: the CPU threads torch may use in it (default: torch's, all the cores)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "kdcli", *args, "--json"], env=env, capture_output=True, text=True)
    if done.returncode not in ok:
        sys.exit(f"kdcli {args[0]} failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    return dict(json.loads(done.stdout))


def commit() -> str | None:
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
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


def mean_std(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", default="runs/bench-fmnist5k")
    parser.add_argument("--results", default=None, help="copy each finished run's small files here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (preset: 40)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (preset: 40)")
    parser.add_argument("--teacher", default=None, help="an already trained teacher file (skips training one)")
    parser.add_argument("--arms", nargs="+", default=["student", "vanilla"], help="student, or a method's name")
    parser.add_argument("--grid", nargs="*", default=[], help="kdcli sweep --grid items, e.g. method.sps=true,false")
    parser.add_argument("--set", nargs="*", default=[], dest="sets", help="kdcli --set items for every run")
    parser.add_argument("--val-split", type=float, default=0.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="teacher and student runs: auto (bf16 on CUDA, else fp32), bf16, fp16, fp32",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time (default: kdcli sweep's choice)")
    args = parser.parse_args()
    out = Path(args.out)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []

    teacher = args.teacher
    teacher_seconds = 0.0
    if teacher is None:
        if (out / "teacher" / "checkpoint.pt").is_file():  # a stopped benchmark: the teacher continues
            trained = kdcli("train", "--resume", str(out / "teacher"), "--quiet")
        else:
            trained = kdcli(
                "train",
                "--preset",
                "fmnist5k-teacher",
                "--seed",
                "0",
                "--device",
                args.device,
                "--precision",
                args.precision,
                *data,
                *(["--epochs", str(args.teacher_epochs)] if args.teacher_epochs else []),
                "--out",
                str(out / "teacher"),
                "--quiet",
            )
        teacher, teacher_seconds = trained["student_file"], trained["timing"]["wall_seconds"]
    # at the runs' thread count: beside a sweep still running on the same cores, torch's default oversubscribes them
    evaluated = kdcli("eval", teacher, *data, "--device", args.device, "--quiet", threads=args.threads)
    sweep = kdcli(
        "sweep",
        "--preset",
        "fmnist5k-vanilla",
        "--teacher",
        teacher,
        *data,
        *epochs,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--val-split",
        str(args.val_split),
        "--methods",
        ",".join(args.arms),
        "--seeds",
        ",".join(map(str, args.seeds)),
        *(f"--grid={item}" for item in args.grid),
        *(f"--set={item}" for item in args.sets),
        *(["--jobs", str(args.jobs)] if args.jobs else []),
        *(["--threads", str(args.threads)] if args.threads else []),
        "--baseline",
        "student" if "student" in args.arms else args.arms[0],
        "--out",
        str(out / "sweep"),
        "--quiet",
        ok=(0, 1),
    )

    if args.results:
        for run in sweep["runs"]:
            source, target = out / "sweep" / run["name"], Path(args.results) / run["name"]
            target.mkdir(parents=True, exist_ok=True)
            for name in SMALL_FILES:
                if (source / name).is_file():
                    shutil.copy2(source / name, target / name)
    arms: dict[str, dict[str, Any]] = {}
    # as the runs resolved them (report.json), not as asked: "auto" is bf16 on CUDA, else fp32
    precisions, threads = set(), set()
    for run in sweep["runs"]:
        label = run["name"].rsplit("-s", 1)[0]
        arm = arms.setdefault(label, {"runs": [], "best_on_val": [], "failed": []})
        if run["status"] != "finished":
            arm["failed"].append(f"seed {run['seed']}: {run['reason']}")
            continue
        report = json.loads((out / "sweep" / run["name"] / "report.json").read_text())
        arm["runs"].append(report["final"]["last_top1"])
        precisions.add(report["environment"].get("precision") or args.precision)
        threads.add(report["environment"]["cpu_threads"])
        if report["final"]["best_top1"] is not None:
            arm["best_on_val"].append(report["final"]["best_top1"])
    print(
        json.dumps(
            {
                "benchmark": "fmnist5k",
                "commit": commit(),
                "torch": torch.__version__,
                "device": torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu",
                "cpu": platform.processor() or platform.machine(),
                "precision": ",".join(sorted(precisions)) or args.precision,
                "jobs": sweep["jobs"],
                "threads_per_run": sorted(threads),
                "seeds": args.seeds,
                "student_epochs": args.epochs or 40,
                "teacher_epochs": teacher_epochs(teacher) if args.teacher else (args.teacher_epochs or 40),
                "val_split": args.val_split,
                "teacher_top1": evaluated["results"][0]["top1"],
                "teacher_seconds": teacher_seconds,
                "sweep_seconds": sweep["wall_seconds"],
                "arms": {
                    name: {
                        "last_top1": mean_std(arm["runs"]),
                        "best_on_val_top1": mean_std(arm["best_on_val"]),
                        "runs": arm["runs"],
                        **({"failed": arm["failed"]} if arm["failed"] else {}),
                    }
                    for name, arm in arms.items()
                },
                "verdict": sweep["verdict"],
            }
        )
    )


if __name__ == "__main__":
    main()
