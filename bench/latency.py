"""Deployment latency on the CPU: an exported student in ONNX Runtime against the same student in PyTorch eager.

    python bench/latency.py                                          # the shipped resnet20, batch 1 and 64
    python bench/latency.py --model runs/r1/student.safetensors --threads 1 4 --batches 1 8 64 --repeats 100

Exports the kdcli model file with `kdcli export --format onnx --dynamic-batch` into a temporary folder (the export
is checked against PyTorch before it is kept), then times, for each batch size, one forward of each runtime on the
same seeded random images in [0, 1]: ONNX Runtime's CPUExecutionProvider on the exported graph, and PyTorch eager
(fp32, `torch.inference_mode`) on the model kdcli loads (`open_model_file`: the student with its input
normalization, as exported). Both get the same number of threads (`--threads`, default: torch's, the cores;
several values give a configuration each). Each configuration is warmed up (`--warmup` forwards of each runtime),
then timed `--repeats` times, the two runtimes taking turns so that a change in the machine's load falls on both;
the median is reported, with the spread. Prints one JSON line per configuration: the runtime and its version,
batch, threads, latency (median, 10th and 90th percentile, in ms), images per second, ONNX Runtime's speed-up over
PyTorch at the same batch and threads, the model (file, architecture, opset), and the machine (CPU name, cores,
load average at the start and the end: other jobs on the machine slow both runtimes, PyTorch's multi-threaded
kernels most).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kdcli
from kdcli import api
from kdcli.runtime.loading import open_model_file, resolve_checkpoint_path

DEFAULT_MODEL = "kdcli:fmnist-mini-resnet20.safetensors"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not on every platform
        return None


def time_interleaved(calls: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` calls of each runtime after ``warmup`` untimed ones, the runtimes taking turns (in
    alternating order), so a change in the machine's load over the run falls on both alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for repeat in range(repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def summarize(seconds: list[float], batch: int) -> dict[str, Any]:
    ordered = sorted(seconds)
    median = statistics.median(ordered)
    return {
        "median_ms": median * 1e3,
        "p10_ms": ordered[int(0.1 * (len(ordered) - 1))] * 1e3,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1e3,
        "images_per_second": batch / median,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a kdcli model file, or kdcli:NAME for a shipped one")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="threads of each runtime; several values: one configuration each")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=10, help="untimed forwards before each configuration")
    parser.add_argument("--repeats", type=int, default=50, help="timed forwards per configuration")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    args = parser.parse_args()

    import onnxruntime as ort

    load_before = load_average()
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "student.onnx"
        exported = api.export(args.model, format="onnx", out=onnx_path, opset=args.opset, dynamic_batch=True)
        sessions = {}
        for threads in args.threads:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            sessions[threads] = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    model, card = open_model_file(resolve_checkpoint_path(args.model), torch.device("cpu"))
    assert card is not None
    shape = exported["input_shape"][1:]
    environment: dict[str, Any] = {
        "benchmark": "latency",
        "kdcli": kdcli.__version__,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "model": args.model,
        "arch": card.arch,
        "student_transform": card.student_transform,
        "input_shape": shape,
        "opset": exported["opset"],
        "export_max_abs_diff": exported["max_abs_diff"],
        "warmup": args.warmup,
        "repeats": args.repeats,
    }
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        session = sessions[threads]
        for batch in args.batches:
            images = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(batch))
            feed = {exported["input"]["name"]: images.numpy()}

            def run_torch(images: torch.Tensor = images) -> object:
                with torch.inference_mode():
                    return model(images)

            def run_onnx(feed: dict[str, Any] = feed, session: Any = session) -> object:
                return session.run(None, feed)

            seconds = time_interleaved({"pytorch": run_torch, "onnxruntime": run_onnx}, args.warmup, args.repeats)
            eager, onnx = summarize(seconds["pytorch"], batch), summarize(seconds["onnxruntime"], batch)
            common = {"threads": threads, "batch_size": batch}
            results.append({"config": f"pytorch-eager-t{threads}-b{batch}", **common,
                            "runtime": f"pytorch {torch.__version__} eager fp32", **eager})  # fmt: skip
            results.append({"config": f"onnxruntime-t{threads}-b{batch}", **common,
                            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", **onnx,
                            "speedup_vs_pytorch": eager["median_ms"] / onnx["median_ms"]})  # fmt: skip
    environment["load_average"] = {"start": load_before, "end": load_average()}
    for result in results:
        print(json.dumps({**environment, **result}), flush=True)


if __name__ == "__main__":
    main()
