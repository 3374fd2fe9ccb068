"""``kdcli analyze``: what a teacher teaches (Tang et al. 2020), measured on a data set's images.

The teacher (and optionally a student) predicts every image of the split once — clean, in order; the training split
without augmentation — and kdcli.methods.knowledge turns the outputs into the universe, domain and instance levels
and the four-part decomposition, at τ = 1 and at the run's temperature.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from kdcli._version import __version__
from kdcli.analysis.report import (
    Analysis,
    AtTemperature,
    ClassPair,
    Decomposition,
    Domain,
    Instance,
    Universe,
)
from kdcli.config import DataConfig, evaluation_settings
from kdcli.data import DataBundle, Loader, TensorLoader, build_data
from kdcli.errors import UsageError, option
from kdcli.interfaces import Reporter
from kdcli.io.model_file import require_card
from kdcli.methods.knowledge import (
    TeacherStatistics,
    decomposition,
    gradient_rescaling,
    relationship_divergence,
    teacher_statistics,
)
from kdcli.runtime.acceleration import resolve_acceleration
from kdcli.runtime.loading import (
    check_channels,
    data_of_file,
    open_model_file,
    resolve_checkpoint_path,
    resolve_device,
)
from kdcli.runtime.metrics import predict

SATURATED = 0.99
MOST_RELATED = 5


def _entropy(p: Tensor) -> Tensor:
    return -torch.xlogy(p, p).sum(-1)


def _ranks(values: Tensor) -> Tensor:
    return values.argsort().argsort().double()


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def _weight_cosine_correlation(model: torch.nn.Module, relationships: Tensor) -> float | None:
    """Spearman correlation between the cosines of the classifier's rows and the symmetric relationships."""
    classifier = getattr(model, "get_classifier", lambda: None)()
    weight = getattr(classifier, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] != relationships.shape[0]:
        return None
    rows = torch.nn.functional.normalize(weight.detach().double().cpu(), dim=1)
    cosine = rows @ rows.T
    off = ~torch.eye(relationships.shape[0], dtype=torch.bool)
    symmetric = (relationships + relationships.T) / 2
    return _pearson(_ranks(cosine[off]), _ranks(symmetric[off]))


def _most_related(relationships: Tensor, classes: list[str]) -> list[ClassPair]:
    symmetric = (relationships + relationships.T) / 2
    upper = torch.triu(torch.ones_like(symmetric, dtype=torch.bool), diagonal=1)
    values, order = symmetric[upper].sort(descending=True)
    pairs = upper.nonzero()[order]
    return [
        ClassPair(first=classes[i], second=classes[j], relationship=float(v))
        for (i, j), v in zip(pairs.tolist()[:MOST_RELATED], values[:MOST_RELATED], strict=False)
    ]


def _universe(probabilities: Tensor, stats: TeacherStatistics, saturated: bool) -> Universe:
    classes = probabilities.shape[1]
    epsilon = stats.smoothing
    smoothed = _entropy(torch.tensor([1 - epsilon] + [epsilon / (classes - 1)] * (classes - 1), dtype=torch.float64))
    return Universe(
        matched_smoothing=epsilon,
        class_smoothing=(1 - stats.class_confidence).tolist(),
        teacher_entropy=float(_entropy(probabilities.double()).mean()),
        smoothed_entropy=float(smoothed),
        saturated_share=float((stats.confidence > SATURATED).double().mean()) if saturated else None,
    )


def _instance(
    teacher: Tensor,
    student: Tensor,
    labels: Tensor,
    stats: TeacherStatistics,
    temperature: float,
    ce_weight: float,
    kd_weight: float,
) -> Instance:
    w = gradient_rescaling(teacher, student, labels, temperature, ce_weight, kd_weight)
    # w divides by 1 - q_y: where the student already fits an example (q_y near 1) it runs to thousands, so the
    # text gives the median and the central 98 %, and the histogram's bins are even in sign(w)·log10(1 + |w|)
    # (drawn on a symlog axis), which shows -0.5 and -5,000 apart without hiding either
    levels = torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)
    low, median, high = (float(v) for v in torch.quantile(w.double(), levels))
    squashed = w.double().sign() * w.double().abs().log1p()
    lo, hi = float(squashed.min()), float(squashed.max())
    hi = hi if hi > lo else lo + 1
    counts = torch.histc(squashed, bins=40, min=lo, max=hi)
    edges = torch.linspace(lo, hi, 41, dtype=torch.float64)
    edges = edges.sign() * edges.abs().expm1()
    return Instance(
        ce_weight=ce_weight,
        kd_weight=kd_weight,
        mean_rescaling=float(w.mean()),
        median_rescaling=median,
        central_range=[low, high],
        share_below_ce_weight=float((w < ce_weight).double().mean()),
        share_negative=float((w < 0).double().mean()),
        correlation_with_confidence=_pearson(w, stats.confidence),
        histogram_edges=edges.tolist(),
        histogram_counts=[int(c) for c in counts.tolist()],
    )


def _clean_split(bundle: DataBundle, split: str, batch_size: int) -> Loader:
    """The split's images in order; the training split without its shuffling and augmentation."""
    loader = bundle.split(split)
    if split != "train":
        return loader
    if not isinstance(loader, TensorLoader):
        raise UsageError(
            f"{option('split', 'train')} needs an in-memory data set; with imagefolder analyze "
            f"{option('split', 'test')}"
        )
    return TensorLoader(loader.images, loader.labels, batch_size, loader.device)


def analyze(
    teacher: str | Path,
    data: DataConfig | None = None,
    *,
    student: str | Path | None = None,
    split: str = "train",
    temperature: float = 4.0,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
    device: str = "auto",
    batch_size: int | None = None,
    reporter: Reporter | None = None,
) -> Analysis:
    """The teacher's knowledge on a split (``train`` by default, without augmentation) of ``data`` (its ``name``
    unset: the data set the teacher's file records), at τ = 1 and at ``temperature``; with ``student``, the instance
    level for ``γ·CE + α·T²·KL`` (``ce_weight``, ``kd_weight``)."""
    reporter = reporter or Reporter()
    data = data or DataConfig()
    if not (math.isfinite(temperature) and temperature > 0):  # T divides the logits: 0 or NaN makes every figure NaN
        raise UsageError(f"{option('temperature')} must be a positive number (the run's T, 4 say), not {temperature:g}")
    for name, weight in (("ce_weight", ce_weight), ("kd_weight", kd_weight)):
        if not math.isfinite(weight):
            raise UsageError(f"{option(name)} must be a finite number (the run's loss weight), not {weight:g}")
    torch_device = resolve_device(device)
    acceleration = resolve_acceleration(evaluation_settings(batch_size), torch_device)
    autocast = acceleration.autocast(torch_device)
    batch = acceleration.eval_batch_size
    teacher_path = resolve_checkpoint_path(str(teacher))
    card = require_card(teacher_path, "kdcli analyze")
    student_path = resolve_checkpoint_path(str(student)) if student is not None else None
    student_card = require_card(student_path, "kdcli analyze") if student_path is not None else None
    if student_card is not None and student_card.num_classes != card.num_classes:  # checked before any work
        raise UsageError(
            f"the student {student_path} predicts {student_card.num_classes} classes but the teacher "
            f"{teacher_path} {card.num_classes}; pass a student of the teacher's classes"
        )
    layout = acceleration.channels_last
    teacher_model, _ = open_model_file(teacher_path, torch_device, channels_last=layout)
    student_model = (
        open_model_file(student_path, torch_device, channels_last=layout)[0] if student_path is not None else None
    )
    data = data_of_file(data, card, teacher_path)
    data_name = data.name
    bundle = build_data(data, torch_device, batch, batch, seed=0)
    if bundle.num_classes != card.num_classes:
        raise UsageError(f"{teacher_path} predicts {card.num_classes} classes but {data_name} has {bundle.num_classes}")
    check_channels(card.in_chans, bundle, f"the teacher {teacher_path}")
    if student_card is not None:
        check_channels(student_card.in_chans, bundle, f"the student {student_path}")
    loader = _clean_split(bundle, split, batch)

    def progress(index: int, output: object, labels: Tensor) -> None:
        reporter.advance()

    reporter.begin(f"teacher over {split}", len(loader))
    teacher_logits, labels = predict(teacher_model, loader, autocast, progress)
    student_logits = None
    if student_model is not None:
        reporter.begin(f"student over {split}", len(loader))
        student_logits = predict(student_model, loader, autocast, progress)[0]
    reporter.close()

    results = []
    for tau in dict.fromkeys((1.0, temperature)):
        probabilities = torch.softmax(teacher_logits.double() / tau, 1)
        stats = teacher_statistics(probabilities, labels)
        confidence_histogram = torch.histc(stats.confidence, bins=20, min=0.0, max=1.0)
        relation_kl = relationship_divergence(stats)
        domain = Domain(
            relationships=stats.relationships.tolist(),
            divergence_from_uniform=relation_kl.tolist(),
            mean_divergence_from_uniform=float((stats.class_frequency * relation_kl).sum()),
            most_related=_most_related(stats.relationships, bundle.classes),
            class_means=stats.class_means.tolist(),
            weight_cosine_rank_correlation=_weight_cosine_correlation(teacher_model.model, stats.relationships),
        )
        instance = None
        if student_logits is not None:
            instance = _instance(teacher_logits, student_logits, labels, stats, tau, ce_weight, kd_weight)
        results.append(
            AtTemperature(
                temperature=tau,
                universe=_universe(probabilities, stats, saturated=tau == 1.0),
                domain=domain,
                decomposition=Decomposition(**decomposition(probabilities, labels, stats)),
                confidence_histogram=[int(c) for c in confidence_histogram.tolist()],
                instance=instance,
            )
        )
    return Analysis(
        kdcli_version=__version__,
        teacher=str(teacher_path),
        teacher_arch=card.arch,
        student=str(student) if student is not None else None,
        data=data_name,
        split=split,
        samples=int(labels.numel()),
        classes=bundle.classes,
        teacher_top1=100.0 * float(teacher_logits.argmax(1).eq(labels).double().mean()),
        results=results,
    )
