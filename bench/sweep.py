"""What packing buys (issue 22): the same sweep — 2 methods × 2 seeds × 1 epoch on the embedded data — with
``--jobs N`` against ``--jobs 1`` (the four runs one after another, each with all the cores), wall time of the
whole ``kdcli sweep`` command.

    python bench/sweep.py                          # on the CPU: --jobs 2 against --jobs 1
    python bench/sweep.py --device cuda --jobs 4   # on a GPU

Trains its own teacher first (1 epoch, not timed). Prints one JSON line: the configuration, the commit, each wall
time and their ratio (the speed-up of packing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--data", "embedded", "--epochs", "1", "--student", "resnet8", "--batch-size", "64"]


def kdcli(*args: str) -> float:
    """Run ``kdcli ARGS`` (this checkout's) and return its wall time; a failure stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kdcli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"kdcli {' '.join(args[:2])} failed: {done.stderr.strip()[-400:]}")
    return time.perf_counter() - started


def commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--methods", default="vanilla,pesf")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        kdcli(
            "train",
            "--model",
            "resnet8",
            "--data",
            "embedded",
            "--epochs",
            "1",
            "--device",
            args.device,
            "--out",
            str(work / "teacher"),
            "--quiet",
        )
        common = [
            "sweep",
            "--teacher",
            str(work / "teacher" / "student.safetensors"),
            *TINY,
            "--device",
            args.device,
            "--methods",
            args.methods,
            "--seeds",
            args.seeds,
            "--quiet",
        ]
        cores = os.cpu_count() or 1
        # every core busy either way: N runs of cores/N threads, or one run at a time with all the cores
        packed = kdcli(
            *common,
            "--jobs",
            str(args.jobs),
            "--threads",
            str(max(1, cores // args.jobs)),
            "--out",
            str(work / "packed"),
        )
        one = kdcli(*common, "--jobs", "1", "--threads", str(cores), "--out", str(work / "one"))
    runs = len(args.methods.split(",")) * len(args.seeds.split(","))
    print(
        json.dumps(
            {
                "benchmark": "sweep-packing",
                "commit": commit(),
                "device": args.device,
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "torch": torch.__version__,
                "runs": runs,
                "methods": args.methods,
                "seeds": args.seeds,
                "epochs": 1,
                "data": "embedded (5,000 images)",
                "jobs": args.jobs,
                "threads_per_run": {"jobs_n": max(1, (os.cpu_count() or 1) // args.jobs), "jobs_1": os.cpu_count()},
                "seconds_jobs_n": round(packed, 1),
                "seconds_jobs_1": round(one, 1),
                "speedup": round(one / packed, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
