"""Parity with a plain loop (issue 19): kdcli's FMNIST-5k recipe against the plain reference loop
(../shared/reference/fmnist5k_reference.py, run as a subprocess, never copied), on the same machine and the same
5,000 training images: kdcli's stratified subset (subset_seed 0), handed to the reference loop with --index-file.

    python bench/parity.py --data-dir ../shared/data/fashion-mnist --device cpu           # everything, one at a time
    python bench/parity.py --data-dir D --device cuda --jobs 8 --results bench/results/parity-gpu
    python bench/parity.py --data-dir D --arms reference/alone kdcli/alone --ablations none --seeds 0

Arms (3 seeds each by default; seed k's student is distilled from seed k's teacher, on both sides):
  reference/teacher, reference/alone, reference/kd   the reference loop with its defaults
  kdcli/teacher, kdcli/alone, kdcli/vanilla           `kdcli train|distill --preset fmnist5k-{teacher,student,vanilla}`
Ablations (seed 0 by default, `--ablation-seeds`), each a student alone with one recipe difference changed:
  reference/alone:SWITCH[,SWITCH...]   the reference loop's switches, e.g. `no-nesterov`, `pct-start=0.3`
  kdcli/alone:KEY=VALUE[,KEY=VALUE...] `--set` overrides of the fmnist5k-student preset
Each tool runs at its own default precision on the device: fp32 on the CPU, bf16 (channels-last) on CUDA.

Runs are kept under --out and a finished one is not run again, so a stopped benchmark started again with the same
command finishes only what is missing (a CPU measurement can span sessions). With --results each finished run's
small files are copied there at once (kdcli: report.json, metrics.jsonl, config.yaml; the reference: its RESULT
lines), never the weights. Prints one JSON line: the configuration, the commit, per arm {"runs", "mean", "std"},
and kdcli's gap to the reference for the teacher, the student alone and KD.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kdcli
from kdcli.data import stratified_indices
from kdcli.data.sources import load_fashion_mnist
from kdcli.reporting.compare import mean_std
from kdcli.sweeps import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_CANDIDATES = (ROOT.parent / "shared" / "reference" / "fmnist5k_reference.py",
                        ROOT / ".data" / "reference" / "fmnist5k_reference.py")  # fmt: skip
PARITY_ARMS = ("reference/teacher", "reference/alone", "reference/kd", "kdcli/teacher", "kdcli/alone", "kdcli/vanilla")
# One difference at a time (the table), from each side: the reference loop with kdcli's old setting, and kdcli
# with the reference's setting undone. `kdcli/alone:data.val_split=0.1` is the protocol's held-out split.
ABLATIONS = (
    "reference/alone:no-nesterov,pct-start=0.3,no-cycle-momentum,keep-last-batch",
    "reference/alone:no-nesterov",
    "reference/alone:pct-start=0.3",
    "reference/alone:no-cycle-momentum",
    "reference/alone:keep-last-batch",
    "kdcli/alone:optim.nesterov=false,schedule.warmup_fraction=0.3,schedule.cycle_momentum=false,data.drop_last=false",
    "kdcli/alone:optim.nesterov=false",
    "kdcli/alone:schedule.warmup_fraction=0.3",
    "kdcli/alone:schedule.cycle_momentum=false",
    "kdcli/alone:data.drop_last=false",
    "kdcli/alone:data.val_split=0.1",
)
KDCLI_PRESETS = {"teacher": "fmnist5k-teacher", "alone": "fmnist5k-student", "vanilla": "fmnist5k-vanilla"}
SMALL_FILES = ("report.json", "metrics.jsonl", "config.yaml")


@dataclass
class Outcome:
    arm: str
    seed: int
    top1: float
    seconds: float


@dataclass
class Bench:
    args: argparse.Namespace
    out: Path
    index_file: Path
    reference: Path
    env: dict[str, str]
    outcomes: list[Outcome] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)

    def say(self, line: str) -> None:
        print(f"[parity {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    def keep(self, source: Path, name: str) -> None:
        if self.args.results is None:
            return
        target = Path(self.args.results) / name
        target.mkdir(parents=True, exist_ok=True)
        for path in [source] if source.is_file() else [source / n for n in SMALL_FILES]:
            if path.is_file():
                shutil.copy2(path, target / path.name)

    def record(self, arm: str, seed: int, top1: float, seconds: float) -> None:
        self.outcomes.append(Outcome(arm, seed, top1, seconds))
        self.say(f"{arm} seed {seed}: {top1:.2f} % in {seconds:.0f} s")

    def fail(self, arm: str, seed: int, reason: str) -> None:
        self.failures.setdefault(arm, []).append(f"seed {seed}: {reason}"[:500])
        self.say(f"{arm} seed {seed} FAILED: {reason}")

    # --- the reference loop ----------------------------------------------------------------------------------------
    def reference_run(self, settings: str, seed: int, teacher: bool, kd: bool) -> None:
        """One reference process: optionally the teacher of this seed, then the student alone (and with KD);
        ``settings``: the loop's switches, comma-separated (an ablation), or empty."""
        switches = [s for s in settings.split(",") if s]
        folder = self.out / f"{folder_name('reference:' + settings if settings else 'reference')}-s{seed}"
        lines_file = folder / "results.jsonl"
        if not lines_file.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, str(self.reference), "--data", self.args.data_dir, "--index-file",
                       str(self.index_file), "--seeds", str(seed), "--teacher-seed", str(seed), "--device",
                       self.args.device, "--epochs", str(self.args.epochs)]  # fmt: skip
            command += [] if teacher else ["--teacher", "none"]
            command += [] if kd or not teacher else ["--alone-only"]
            for switch in switches:
                name, _, value = switch.partition("=")
                command += [f"--{name}"] + ([value] if value else [])
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=self.env, cwd=folder,
                                  preexec_fn=die_with_parent())  # fmt: skip
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                for role in ("teacher", "alone", "kd") if teacher else ("alone",):
                    self.fail(reference_arm(role, settings), seed, f"exit {done.returncode}: {tail}")
                return
            results = [json.loads(line.removeprefix("RESULT ")) for line in done.stdout.splitlines()
                       if line.startswith("RESULT ")]  # fmt: skip
            seconds = time.perf_counter() - started
            for result in results:
                result["wall_seconds"] = seconds  # the whole process, teacher included
            atomic_write(lines_file, "".join(json.dumps(r) + "\n" for r in results))
        self.keep(lines_file, folder.name)
        for result in map(json.loads, lines_file.read_text().splitlines()):
            seconds = result.get("seconds", result["wall_seconds"])
            self.record(reference_arm(result["role"], settings), seed, result["top1"], seconds)

    # --- kdcli -----------------------------------------------------------------------------------------------------
    def kdcli_run(self, label: str, role: str, seed: int, overrides: list[str], teacher: Path | None = None) -> Path:
        """One `kdcli train|distill` run through the command line, as a user runs it; returns its folder."""
        folder = self.out / f"{folder_name(label)}-s{seed}"
        report = folder / "report.json"
        if not report.is_file():
            verb = "distill" if teacher else "train"
            command = [sys.executable, "-m", "kdcli", verb, "--preset",
                       KDCLI_PRESETS[role], "--data-dir", self.args.data_dir, "--seed", str(seed), "--device",
                       self.args.device, "--epochs", str(self.args.teacher_epochs if role == "teacher" else
                                                         self.args.epochs), "--quiet", "--json"]  # fmt: skip
            command += ["--teacher", str(teacher)] if teacher else []
            command += self.args.kdcli_args.split() if self.args.kdcli_args else []
            for item in overrides:
                command += ["--set", item]
            if (folder / "checkpoint.pt").is_file():  # stopped: continue it with its own config.yaml
                command = [sys.executable, "-m", "kdcli", verb, "--resume", str(folder), "--quiet", "--json"]
            else:
                command += ["--out", str(folder)]
            done = subprocess.run(command, capture_output=True, text=True, env=self.env, cwd=ROOT,
                                  preexec_fn=die_with_parent())  # fmt: skip
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"exit {done.returncode}: {tail}")
        self.keep(folder, folder.name)
        data = json.loads(report.read_text())
        self.record(label, seed, data["final"]["last_top1"], data["timing"]["wall_seconds"])
        return folder

    def kdcli_chain(self, seed: int, arms: list[str]) -> None:
        """Seed ``seed``'s kdcli teacher, then the student distilled from it."""
        try:
            teacher = self.kdcli_run("kdcli/teacher", "teacher", seed, [])
        except RuntimeError as error:
            for arm in arms:
                self.fail(arm, seed, str(error))
            return
        if "kdcli/vanilla" in arms:
            try:
                self.kdcli_run("kdcli/vanilla", "vanilla", seed, [], teacher / "student.safetensors")
            except RuntimeError as error:
                self.fail("kdcli/vanilla", seed, str(error))

    def kdcli_alone(self, label: str, seed: int, overrides: list[str]) -> None:
        try:
            self.kdcli_run(label, "alone", seed, overrides)
        except RuntimeError as error:
            self.fail(label, seed, str(error))


def reference_arm(role: str, settings: str) -> str:
    return f"reference/{role}" + (f":{settings}" if settings else "")


def folder_name(arm: str) -> str:
    """A run folder's name from its arm: ``kdcli/alone:optim.nesterov=false`` → ``kdcli-alone-optim.nesterovfalse``."""
    return arm.replace("/", "-").replace(":", "-").replace("=", "").replace(",", "-")


def atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()  # fmt: skip
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):  # a copy without .git (the GPU machine's): the caller says
        return os.environ.get("KDCLI_COMMIT")


def subset_file(data_dir: str, out: Path) -> tuple[Path, str]:
    """kdcli's FMNIST-5k training images (stratified, subset_seed 0) as the .npy the reference loop reads."""
    train, _, _ = load_fashion_mnist(data_dir)
    indices = stratified_indices(train.labels, 5000, 0).numpy().astype(np.int64)
    path = out / "kdcli-fmnist5k-indices.npy"
    np.save(path, indices)
    return path, hashlib.sha256(indices.tobytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--reference", default=None, help="the reference loop (default: ../shared/reference/...)")
    parser.add_argument("--out", default="runs/bench-parity")
    parser.add_argument("--results", default=None, help="copy each finished run's small files here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(PARITY_ARMS), choices=PARITY_ARMS)
    parser.add_argument("--ablations", nargs="+", default=list(ABLATIONS), help="'none' for no ablation arm")
    parser.add_argument("--ablation-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=40, help="student epochs (the protocol: 40)")
    parser.add_argument("--teacher-epochs", type=int, default=40, help="kdcli's teacher epochs (the protocol: 40)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="processes at a time (a GPU has room for several)")
    parser.add_argument(
        "--kdcli-args",
        default="",
        help="more flags for every kdcli run, e.g. '--no-compile' on a "
        "GPU, where compiling a 40-epoch run of these small models takes longer than the run",
    )
    args = parser.parse_args()
    if args.epochs != args.teacher_epochs and any(a.endswith(("teacher", "kd")) for a in args.arms):
        parser.error("the reference loop trains its teacher for --epochs too: give both the same epochs")
    reference = Path(args.reference) if args.reference else next((p for p in REFERENCE_CANDIDATES if p.is_file()), None)
    if reference is None or not reference.is_file():
        parser.error(f"no reference loop at {args.reference or REFERENCE_CANDIDATES[0]}; pass --reference FILE")
    # absolute: the reference loop runs in its run's folder and kdcli in the checkout, not in the caller's folder
    args.data_dir = str(Path(args.data_dir).resolve())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    index_file, index_digest = subset_file(args.data_dir, out)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    # PYTHONPATH: both tools import this checkout's kdcli (a worktree at a fixed commit, not an editable install's)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    bench = Bench(args, out, index_file, reference, env)
    ablations = [a for a in args.ablations if a != "none"]

    # The longest tasks first, so that --jobs packs them well: teachers (and what waits on them), then students.
    tasks: list[tuple[Any, ...]] = []
    reference_teacher = {"reference/teacher", "reference/kd"} & set(args.arms)
    for seed in args.seeds:
        if reference_teacher or "reference/alone" in args.arms:
            tasks.append((bench.reference_run, "", seed, bool(reference_teacher), "reference/kd" in args.arms))
        if {"kdcli/teacher", "kdcli/vanilla"} & set(args.arms):
            tasks.append((bench.kdcli_chain, seed, args.arms))
    for seed in args.seeds:
        if "kdcli/alone" in args.arms:
            tasks.append((bench.kdcli_alone, "kdcli/alone", seed, []))
    for seed in args.ablation_seeds:
        for ablation in ablations:
            side, _, settings = ablation.partition(":")
            items = [s for s in settings.split(",") if s]
            if side == "reference/alone":
                tasks.append((bench.reference_run, settings, seed, False, False))
            elif side == "kdcli/alone":
                tasks.append((bench.kdcli_alone, ablation, seed, items))
            else:
                parser.error(f"an ablation is reference/alone:SWITCHES or kdcli/alone:KEY=VALUE, not {ablation!r}")
    with ThreadPoolExecutor(args.jobs) as pool:
        futures: list[Future[None]] = [pool.submit(task[0], *task[1:]) for task in tasks]
        for future in futures:
            future.result()

    def summary(arm: str) -> dict[str, Any]:
        runs = sorted((o for o in bench.outcomes if o.arm == arm), key=lambda o: o.seed)
        stats = mean_std([o.top1 for o in runs]) or {"mean": None, "std": None}
        return {"runs": [o.top1 for o in runs], "seeds": [o.seed for o in runs], **stats,
                "seconds": mean_std([o.seconds for o in runs]),
                **({"failed": bench.failures[arm]} if arm in bench.failures else {})}  # fmt: skip

    arms = {arm: summary(arm) for arm in args.arms}
    ablation_arms = {arm: summary(arm) for arm in sorted({o.arm for o in bench.outcomes} - set(arms))}
    pairs = {"teacher": ("kdcli/teacher", "reference/teacher"), "alone": ("kdcli/alone", "reference/alone"),
             "kd": ("kdcli/vanilla", "reference/kd")}  # fmt: skip
    gaps = {name: arms[ours]["mean"] - arms[theirs]["mean"] for name, (ours, theirs) in pairs.items()
            if ours in arms and theirs in arms and arms[ours]["mean"] is not None
            and arms[theirs]["mean"] is not None}  # fmt: skip
    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    print(json.dumps({
        "benchmark": "fmnist5k-parity",
        "commit": commit(),
        "kdcli": kdcli.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "precision": "bf16" if cuda else "fp32",
        "jobs": args.jobs,
        "threads_per_run": threads,
        "images": f"kdcli's stratified 5,000 (subset_seed 0), sha256 {index_digest}",
        "seeds": args.seeds,
        "ablation_seeds": args.ablation_seeds,
        "epochs": args.epochs,
        "teacher_epochs": args.teacher_epochs,
        "reference": str(reference.name),
        "kdcli_args": args.kdcli_args,
        "arms": arms,
        "ablations": ablation_arms,
        "gap_kdcli_minus_reference": gaps,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
