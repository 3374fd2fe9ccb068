"""Evaluation speed by batch size: how many milliseconds a model's forward pass (eval mode, no autograd) takes per
image at each evaluation batch, on the machine at hand.

    python bench/eval_batch.py                         # the CIFAR zoo at 32 px and resnet18 at 224 px, on the CPU
    python bench/eval_batch.py --device cuda --batches 128 512 2048

kdcli evaluates the student after every epoch and the teacher once per run, at ``train.eval_batch_size``; this
benchmark is the measurement behind that setting's default on each device (docs/results.md). Each figure is the
mean over at least ``--seconds`` of repeated forwards of one random batch after one warm-up forward, in fp32 (the
CPU's precision; bf16 autocast on CUDA, as a run). Prints one JSON line: the configuration and, per model, the
milliseconds per image at each batch.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext

import timm
import torch

import kdcli.models  # noqa: F401  (registers the CIFAR zoo into timm)
from kdcli.data import usable_cores

MODELS = ["resnet8", "resnet20", "resnet56", "resnet110", "resnet32x4:100", "resnet18:10:224"]


def per_image_ms(model: torch.nn.Module, batch: torch.Tensor, seconds: float, device: torch.device) -> float:
    cast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
    with torch.no_grad(), cast:
        model(batch)  # warm-up
        images, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model(batch)
            images += batch.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - started) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, help="ARCH[:CLASSES[:SIZE]] (10 classes, 32 px)")
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 64, 128, 256, 512])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per model and batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    figures: dict[str, dict[str, float]] = {}
    for spec in args.models:
        arch, classes, size = (spec.split(":") + ["10", "32"][spec.count(":") :])[:3]
        model = timm.create_model(arch, num_classes=int(classes)).to(device).eval()
        per_batch = {}
        for batch_size in args.batches:
            batch = torch.randn(batch_size, 3, int(size), int(size), device=device)
            per_batch[str(batch_size)] = round(per_image_ms(model, batch, args.seconds, device), 4)
        figures[f"{arch}@{size}px"] = per_batch
    line = {
        "benchmark": "eval_batch",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": "bf16" if device.type == "cuda" else "fp32",
        "seconds_per_figure": args.seconds,
        "ms_per_image": figures,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
