"""Engine speed: resnet110 → resnet20 on synthetic CIFAR-100-shaped data (50,000 images per epoch).

    python bench/engine.py                                  # every configuration, on CUDA when present
    python bench/engine.py --device cpu --images 2048 --configs eager recipe   # a CPU smoke run

Prints one JSON line per configuration: seconds per 50,000-image epoch, images per second, achieved TFLOP/s
(2 FLOP per MAC; teacher forward + 3 × student forward for the student's forward and backward), and the same
figures for the plain eager loop (fp32, no compile, batch 64) measured in the same process, so the speed-up holds
on any machine, and for the methods their cost relative to `recipe` (vanilla) at the same batch. The data live on
the device as uint8 with crop, flip and normalization done there, as in a run.
Configurations (reference-numbers.md), the first four one step of the fast path at a time:
- eager:        batch 64, fp32, eager — the baseline;
- channels-last: batch 64, fp32, eager, channels-last memory (the CPU's default);
- bf16:         batch 64, bf16 autocast and channels-last, still eager;
- compiled:     the same plus torch.compile (the teacher frozen), without CUDA graphs;
- recipe:       batch 64, the fast path's defaults (bf16, channels-last, compile, whole-step CUDA graphs on CUDA);
- graphs-eager: whole-step CUDA graphs over the eager modules (bf16, channels-last, no compile);
- batch256 / batch1024 / batch4096: the fast path at larger batches (lr scaled linearly, with warm-up);
- pesf / skd / pea / pea-nosps: the fast path at batch 64 with each method (pea: SPS student, PTP not timed;
  SPS reruns the student's blocks, so pea-nosps is the like-for-like cost of the method's losses).
Each is timed on its second epoch: the first compiles and records graphs. `captured` says whether the step really
ran as a CUDA graph.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import torch

import kdcli
from kdcli.config import resolve
from kdcli.data import DataBundle, TensorLoader
from kdcli.data.sources import STATS
from kdcli.errors import RunFailed, UsageError
from kdcli.interfaces import Reporter
from kdcli.runtime.metrics import count_macs
from kdcli.training.engine import train_epoch
from kdcli.training.run import setup
from kdcli.training.step import GraphedStep

EPOCH_IMAGES = 50_000
FAST: dict[str, Any] = {}  # the automatic defaults: on for CUDA; only channels-last on the CPU
EAGER = {"precision": "fp32", "compile": False, "cuda_graphs": False, "channels_last": False}
BF16 = {"precision": "bf16", "compile": False, "cuda_graphs": False, "channels_last": True}
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (train settings, method)
    "eager": ({"batch_size": 64, **EAGER}, {"name": "vanilla"}),
    "channels-last": ({"batch_size": 64, **EAGER, "channels_last": True}, {"name": "vanilla"}),
    "bf16": ({"batch_size": 64, **BF16}, {"name": "vanilla"}),
    "compiled": ({"batch_size": 64, **BF16, "compile": True}, {"name": "vanilla"}),
    "recipe": ({"batch_size": 64, **FAST}, {"name": "vanilla"}),
    "graphs-eager": ({"batch_size": 64, **BF16, "cuda_graphs": True}, {"name": "vanilla"}),
    "batch256": ({"batch_size": 256, **FAST}, {"name": "vanilla"}),
    "batch1024": ({"batch_size": 1024, **FAST}, {"name": "vanilla"}),
    "batch4096": ({"batch_size": 4096, **FAST}, {"name": "vanilla"}),
    "pesf": ({"batch_size": 64, **FAST}, {"name": "pesf"}),
    "skd": ({"batch_size": 64, **FAST}, {"name": "skd"}),
    "pea": ({"batch_size": 64, **FAST}, {"name": "pea", "ptp": False}),
    "pea-nosps": ({"batch_size": 64, **FAST}, {"name": "pea", "ptp": False, "sps": False}),
}


def synthetic_data(images: int, batch_size: int, device: torch.device) -> DataBundle:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 100, (images,), generator=generator)
    mean, std = STATS["cifar100"]
    train = TensorLoader(pixels, labels, batch_size, device, shuffle=True, crop_padding=4, hflip=True)
    return DataBundle(name="synthetic", classes=[str(i) for i in range(100)], in_chans=3, image_size=(32, 32),
                      mean=mean, std=std, train=train, test=None, val=None)  # fmt: skip


def measure(name: str, images: int, device: str) -> dict[str, Any]:
    train, method = CONFIGS[name]
    batch = train["batch_size"]
    config = resolve([("bench", {
        "teacher": {"arch": "resnet110"}, "student": {"arch": "resnet20"}, "method": method,
        "optim": {"lr": 0.05, "lr_batch_size": 64},  # the recipe's rate, scaled linearly to the batch
        "schedule": {"name": "cosine", "warmup_epochs": 0 if batch <= 64 else 1},
        "train": {"epochs": 2, "device": device, "allow_untrained_teacher": True, **train},
    })]).config  # fmt: skip
    torch_device = torch.device(device)
    torch._dynamo.reset()  # each configuration compiles afresh, never over another's cache entries
    run = setup(config, None, data=synthetic_data(images, batch, torch_device))
    seconds = []
    for epoch in range(2):  # the first epoch compiles and records graphs
        run.epoch = epoch
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train_epoch(run, Reporter())
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    assert run.teacher is not None
    shape = (3, 32, 32)
    flops_per_image = 2 * (count_macs(run.teacher.module.model, shape) + 3 * count_macs(run.student.model, shape))
    per_epoch = seconds[1] * EPOCH_IMAGES / images
    return {
        "config": name,
        "method": method["name"],
        "batch_size": batch,
        "precision": run.acceleration.precision,
        "compile": run.acceleration.compile,
        "cuda_graphs": run.acceleration.cuda_graphs,
        "channels_last": run.acceleration.channels_last,
        "captured": isinstance(run.step, GraphedStep) and run.step.graph is not None,
        "images_timed": images,
        "seconds_per_epoch": per_epoch,
        "images_per_second": images / seconds[1],
        "tflops": flops_per_image * images / seconds[1] / 1e12,
        "first_epoch_seconds": seconds[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=EPOCH_IMAGES, help="images per timed epoch (scaled to 50,000)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    environment = {
        "kdcli": kdcli.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    eager = measure("eager", args.images, args.device)
    recipe: dict[str, Any] | None = None
    for name in args.configs:
        try:
            result = eager if name == "eager" else measure(name, args.images, args.device)
        except (UsageError, RunFailed) as error:  # a CUDA-only configuration elsewhere, a step that won't capture
            print(json.dumps({"benchmark": "engine", **environment, "config": name, "skipped": str(error)}))
            continue
        except Exception as error:  # a compiler failure: recorded, and the other configurations still measured
            failure = f"{type(error).__name__}: {error}"[:1000]
            print(json.dumps({"benchmark": "engine", **environment, "config": name, "failed": failure}), flush=True)
            continue
        result["eager_seconds_per_epoch"] = eager["seconds_per_epoch"]
        result["speedup_vs_eager"] = eager["seconds_per_epoch"] / result["seconds_per_epoch"]
        if name == "recipe":
            recipe = result
        elif recipe is not None and result["batch_size"] == recipe["batch_size"]:
            result["cost_vs_recipe"] = result["seconds_per_epoch"] / recipe["seconds_per_epoch"]
        print(json.dumps({"benchmark": "engine", **environment, **result}), flush=True)


if __name__ == "__main__":
    main()
