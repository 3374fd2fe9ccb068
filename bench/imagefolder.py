"""Image folders at 224 px (issue 24): where an epoch's time goes, and kdcli against timm's own train.py distillation.

    python bench/imagefolder.py --data-dir ../shared/data/fashion-mnist --device cpu --images 512 --epochs 1
    python bench/imagefolder.py ... --timm-train /tmp/timm-train/train.py      # with timm's train.py beside kdcli

Makes a JPEG folder itself (once, in OUT/folder): Fashion-MNIST images, a stratified subset of ``--images`` training
and ``--val-images`` test images, upsampled to ``--image-size`` (bilinear) and repeated to RGB, saved as JPEG quality
90 in ImageNet's layout (train/CLASS/, val/CLASS/). Per pair (``TEACHER:STUDENT``; default resnet50:resnet18 and
vit_small_patch16_224:vit_tiny_patch16_224) it measures, with the same batch and precision:

- the loader alone: kdcli's image-folder training loader (timm's transforms in prefetcher mode, worker processes,
  pinned memory) iterated for one epoch with nothing else to do, images/s, and its seconds to the first batch (the
  worker start-up each epoch pays: what persistent workers would save); then its steady rate after the first batch
  over its first 4,096 images with 1, half the cores and all of them as workers (does one more core still help?);
- the step alone: kdcli's whole distillation step (teacher forward, student forward and backward, optimizer) on one
  batch resident on the device, images/s;
- the whole ``kdcli distill`` for ``--epochs``: images/s over its training epochs, the share of that time spent
  waiting for data (the report's ``loader_fraction``) and the last-epoch top-1;
- with ``--timm-train``, timm's train.py with ``--kd-model-name`` on the same folder, the same teacher weights, batch,
  epochs, optimizer and schedule: images/s and top-1 from its own outputs.

The teacher has random weights (seed 0) unless ``--teacher-epochs N`` trains it with kdcli first (the same file goes to
both tools; with random weights the top-1s compare the tools' training, not a useful student). Prints one JSON line
per pair with the figures and the exact configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import kdcli
from kdcli.config import DataConfig, resolve
from kdcli.data import build_data, loader_workers, stratified_indices
from kdcli.data.sources import load_fashion_mnist
from kdcli.interfaces import Reporter
from kdcli.training.run import setup

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ["resnet50:resnet18", "vit_small_patch16_224:vit_tiny_patch16_224"]


def make_folder(out: Path, data_dir: str | None, train_images: int, val_images: int, size: int) -> Path:
    """The JPEG folder (made once; a folder with the wanted counts is kept)."""
    folder = out / "folder"
    done = folder / "done.json"
    wanted = {"train": train_images, "val": val_images, "size": size}
    if done.is_file() and json.loads(done.read_text()) == wanted:
        return folder
    train, test, classes = load_fashion_mnist(data_dir)
    for split, arrays, count in (("train", train, train_images), ("val", test, val_images)):
        chosen = stratified_indices(arrays.labels, count, seed=0)
        for start in range(0, len(chosen), 256):
            index = chosen[start : start + 256]
            images = F.interpolate(arrays.images[index].float(), size=(size, size), mode="bilinear")
            images = images.clamp(0, 255).round().byte().repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
            for n, (image, label) in enumerate(zip(images, arrays.labels[index].tolist(), strict=True)):
                target = folder / split / re.sub(r"[^A-Za-z]+", "-", classes[label])
                target.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(target / f"{start + n:06d}.jpg", quality=90)
    done.write_text(json.dumps(wanted))
    return folder


def teacher_file(out: Path, arch: str, classes: int, size: int, folder: Path, args: argparse.Namespace) -> Path:
    """A plain timm state dict in safetensors (no kdcli metadata), random (seed 0) or trained by kdcli, and the same
    weights as a timm ``local-dir:`` folder (config.json, model.safetensors) for timm's train.py. Named by its
    training epochs (``-e0``: random), so a folder reused with another ``--teacher-epochs`` never hands over the
    other teacher."""
    path = out / f"teacher-{arch}-e{args.teacher_epochs}.safetensors"
    if not path.is_file():
        partial = path.with_name(path.name + ".partial")
        if args.teacher_epochs:
            run = out / f"teacher-{arch}-e{args.teacher_epochs}-run"
            result = kdcli.train(config(None, arch, folder, run, args, epochs=args.teacher_epochs))
            partial.write_bytes(result.student_path.read_bytes())
        else:
            torch.manual_seed(0)
            sized = {"img_size": size} if "vit" in arch or "deit" in arch else {}
            model = timm.create_model(arch, num_classes=classes, **sized)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
        os.replace(partial, path)
    return path


def config(
    teacher: str | None, student: str, folder: Path, out: Path, args: argparse.Namespace, epochs: int
) -> dict[str, Any]:
    fast = {} if args.device != "cpu" else {"precision": "fp32"}
    return {
        **({"teacher": {"arch": teacher, "checkpoint": args.teacher_path}} if teacher else {}),
        "student": {"arch": student},
        "method": {"name": "vanilla" if teacher else "none"},
        "data": {"name": "imagefolder", "dir": str(folder), "image_size": args.image_size, "workers": args.workers,
                 "decode": args.decode},
        "optim": {"name": "sgd", "lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},
        "train": {"epochs": epochs, "batch_size": args.batch_size, "eval_batch_size": args.batch_size,
                  "device": args.device, **fast},
        "output": {"dir": str(out)},
    }  # fmt: skip


def loader_speed(
    folder: Path, args: argparse.Namespace, device: torch.device, workers: int | None, limit: int | None = None
) -> tuple[float, float, float]:
    """The training loader alone for one epoch (or its first ``limit`` images): images/s over the whole of it
    (worker start-up included, as every epoch pays it), the seconds to its first batch (what persistent workers would
    save an epoch), and images/s after the first batch (the workers' steady rate)."""
    data = DataConfig(
        name="imagefolder", dir=str(folder), image_size=args.image_size, workers=workers, decode=args.decode
    )
    bundle = build_data(data, device, args.batch_size, args.batch_size, seed=0)
    started, images, first, first_images = time.perf_counter(), 0, None, 0
    for batch, _ in bundle.train:
        images += batch.shape[0]
        if first is None:
            first, first_images = time.perf_counter() - started, images
        if limit is not None and images >= limit:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    first = first or 0.0
    steady = (images - first_images) / (seconds - first) if images > first_images else 0.0
    return images / seconds, first, steady


def loader_scaling(folder: Path, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """The loader's steady rate (after its first batch, over its first 4,096 images) with 1, half the cores and all
    of them as workers: does another core still add images/s (the default takes every core)?"""
    cores = loader_workers(None, 1)
    counts = sorted({1, max(1, cores // 2), cores})
    return {str(n): loader_speed(folder, args, device, n, limit=4096)[2] for n in counts}


def step_speed(settings: dict[str, Any], steps: int) -> float:
    """The distillation step alone on one resident batch (after three warm-up steps), images/s."""
    run = setup(resolve([("bench", settings)]).config, None)
    images, labels, mix = next(iter(run.data.train.training_batches()))
    for _ in range(3):
        run.step(images, labels, 0.0, mix=mix)
    sync = torch.cuda.synchronize if run.device.type == "cuda" else lambda *_: None
    sync(run.device)
    started = time.perf_counter()
    for _ in range(steps):
        run.step(images, labels, 0.0, mix=mix)
    sync(run.device)
    return steps * labels.numel() / (time.perf_counter() - started)


def kdcli_run(settings: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    result = kdcli.distill(settings, reporter=Reporter())
    epochs = result.report.epochs
    train_seconds = sum(e.seconds for e in epochs)
    images = sum(e.images_per_second * e.seconds for e in epochs)
    return {
        "images_per_second": images / train_seconds,
        "top1": result.report.final.last_top1,
        "teacher_top1": result.report.teacher.top1 if result.report.teacher else None,
        "loader_fraction": result.report.timing.loader_fraction,
        "wall_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", default="runs/bench-imagefolder")
    parser.add_argument("--pairs", nargs="+", default=PAIRS, help="TEACHER:STUDENT timm names")
    parser.add_argument("--images", type=int, default=512, help="training images in the folder")
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--teacher-epochs", type=int, default=0, help="train the teacher with kdcli first (0: random)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: kdcli's, the cores)")
    parser.add_argument("--decode", choices=["host", "device"], default="host", help="kdcli's data.decode")
    parser.add_argument("--steps", type=int, default=10, help="steps timed for the step alone")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timm-train", default=None, help="timm's train.py (its repository at the installed version)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    folder = make_folder(out, args.data_dir, args.images, args.val_images, args.image_size)
    loader, first_batch, _ = loader_speed(folder, args, device, args.workers)
    scaling = loader_scaling(folder, args, device)
    for pair in args.pairs:
        teacher, student = pair.split(":")
        args.teacher_path = str(teacher_file(out, teacher, 10, args.image_size, folder, args))
        run_dir = out / f"kdcli-{teacher}-{student}"
        if run_dir.exists():
            shutil.rmtree(run_dir)  # this benchmark's own run folder: measured afresh every time
        line: dict[str, Any] = {
            "benchmark": "imagefolder",
            "commit": commit(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__,
            "pair": pair,
            "image_size": args.image_size,
            "images": args.images,
            "val_images": args.val_images,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "precision": "fp32" if args.device == "cpu" else "auto (bf16)",
            "workers": loader_workers(args.workers, 1),
            "decode": args.decode,
            "teacher": teacher_origin(teacher, args.teacher_epochs),
            "loader_images_per_second": loader,
            "loader_first_batch_seconds": first_batch,
            "loader_images_per_second_by_workers": scaling,
            "step_images_per_second": step_speed(config(teacher, student, folder, out / "step", args, 1), args.steps),
            "kdcli": kdcli_run(config(teacher, student, folder, run_dir, args, args.epochs)),
        }
        if args.timm_train:
            line["timm_train"] = timm_train(args, teacher, student, folder, out)
        print(json.dumps(line), flush=True)


def teacher_origin(arch: str, epochs: int) -> str:
    trained = f"trained {epochs} epoch{'s' if epochs > 1 else ''} by kdcli"
    return f"{arch}, " + (trained if epochs else "random weights (seed 0)")


def commit() -> str | None:
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        return found.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("KDCLI_COMMIT")


TIMM_LINE = re.compile(r"Train: (\d+) \[\s*(\d+)/(\d+).*?Time: [\d.]+s,\s+[\d.]+/s\s+\([\d.]+s,\s+([\d.]+)/s\)")


def timm_train(args: argparse.Namespace, teacher: str, student: str, folder: Path, out: Path) -> dict[str, Any]:
    """timm's train.py with logit distillation from the same teacher weights (as a ``local-dir:`` folder), set to
    kdcli's recipe: SGD momentum 0.9 without Nesterov, the same lr and weight decay, cosine per step with no warm-up or
    cool-down, no label smoothing, bilinear crops, CE 0.1 + KD 0.9 at T 4 (vanilla's defaults), the same batch,
    epochs, workers and precision. Its images/s is the running average its log gives at each epoch's last update,
    averaged over the epochs; its top-1 the last row of summary.csv. (Its log line counts updates from 0, so an
    epoch's last line reads ``[ n-1/n (100%)]``.)"""
    from timm.models import save_for_hf

    local = out / f"teacher-{teacher}-e{args.teacher_epochs}-timm"
    if not (local / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sized = {"img_size": args.image_size} if "vit" in teacher or "deit" in teacher else {}
        model = timm.create_model(teacher, num_classes=10, **sized)
        model.load_state_dict(load_file(args.teacher_path))
        save_for_hf(model, str(local), safe_serialization=True)
    experiment = f"timm-{teacher}-{student}-{time.strftime('%Y%m%d-%H%M%S')}"
    workers = loader_workers(args.workers, 1)
    precision = [] if args.device == "cpu" else ["--amp", "--amp-dtype", "bfloat16", "--channels-last"]
    command = [
        sys.executable, str(Path(args.timm_train).resolve()), "--data-dir", str(folder), "--train-split", "train",
        "--val-split", "val", "--model", student, "--num-classes", "10", "--img-size", str(args.image_size),
        "--kd-model-name", f"local-dir:{local}", "--kd-distill-type", "logit", "--kd-temperature", "4",
        "--task-loss-weight", "0.1", "--distill-loss-weight", "0.9", "-b", str(args.batch_size),
        "--epochs", str(args.epochs), "--warmup-epochs", "0", "--cooldown-epochs", "0", "--sched", "cosine",
        "--sched-on-updates", "--min-lr", "0", "--opt", "momentum", "--momentum", "0.9", "--lr", str(args.lr),
        "--weight-decay", "5e-4", "--smoothing", "0", "--train-interpolation", "bilinear", "--device", args.device,
        "-j", str(workers), "--seed", "0", "--output", str(out / "timm"), "--experiment", experiment, *precision,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"failed": done.returncode, "stderr": done.stderr.strip()[-800:], "command": command}
    last_of_epoch: dict[int, float] = {}
    for match in TIMM_LINE.finditer(done.stdout + done.stderr):  # an epoch's last line holds its whole average
        epoch, _, _, average = match.groups()
        last_of_epoch[int(epoch)] = float(average)
    rows = (out / "timm" / experiment / "summary.csv").read_text().strip().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    speeds = list(last_of_epoch.values())
    return {
        "images_per_second": sum(speeds) / len(speeds) if speeds else None,
        "top1": float(last[header.index("eval_top1")]),
        "wall_seconds": wall,
        "train_py": str(args.timm_train),
        **({} if speeds else {"log_tail": (done.stdout + done.stderr)[-600:]}),
    }


if __name__ == "__main__":
    sys.exit(main())
