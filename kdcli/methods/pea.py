"""Pea-KD (Cho and Kang, arXiv 2009.14822): Shuffled Parameter Sharing (SPS) and Pretraining with Teacher's
Predictions (PTP), written for BERT and carried over to image classifiers as docs/methods.md describes.

- SPS (a student transform, ``kdcli.models.sps``): the student's layers run a second time with shared weights, the
  two same-shaped matrices of each layer swapped in the second pass.
- PTP (a pre-stage): the frozen teacher labels each training image with one of four classes — 0 correct and
  confident (confidence > t1), 1 correct and unsure, 2 wrong and confident (> t2), 3 wrong and unsure — and the
  student first learns these labels with a temporary 4-way head for ``ptp_epochs``; the head is then replaced by a
  fresh C-way classifier. The released code sets t1, t2 by hand per task (e.g. RTE 0.8/0.6, SST-2 0.98/0.8):
  ``ptp_thresholds: [t1, t2]``. kdcli's default, ``median``, takes the median confidence of the correct and of the
  wrong predictions, which keeps every label populated whatever the data set.
- Then KD: vanilla KD with α = 0.7 (``kd_weight``) and γ = 0.3 by default, T from the configuration.

Choices (docs/methods.md): the teacher labels one augmented view of each image (a teacher that fits the training set
leaves labels 2 and 3 nearly empty on clean images); the PTP stage is run by the engine with the run's optimizer and
training step at a constant learning rate; ``sps`` and ``ptp`` switch the parts off for ablations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcli.catalog import PEA, PeaOptions
from kdcli.interfaces import PreStage, Relabeling, RelabelStage, StudentTransform
from kdcli.methods.vanilla import Vanilla

PTP_LABEL_NAMES = ("correct, confident", "correct, unsure", "wrong, confident", "wrong, unsure")


def ptp_labels(
    teacher_logits: Tensor, labels: Tensor, thresholds: tuple[float, float] | None = None
) -> tuple[Tensor, float, float]:
    """The four PTP labels and the thresholds t1, t2: the given ones, or the median confidence of the correct and of
    the wrong predictions (``nan`` when a group is empty)."""
    confidence, predicted = F.softmax(teacher_logits.float(), dim=1).max(dim=1)
    correct = predicted.eq(labels)
    if thresholds is not None:
        t1, t2 = thresholds
    else:
        t1 = float(confidence[correct].median()) if correct.any() else float("nan")
        t2 = float(confidence[~correct].median()) if (~correct).any() else float("nan")
    four = torch.where(correct, (confidence <= t1).long(), 2 + (confidence <= t2).long())
    return four, t1, t2


class Pea(Vanilla):
    """PTP, then KD into an SPS student; each part switchable (``sps``, ``ptp``)."""

    spec = PEA
    options: PeaOptions

    def student_transform(self) -> StudentTransform | None:
        if not self.options.sps:
            return None
        options = self.options
        return StudentTransform(
            "sps", {"shuffle": options.shuffle, "share_norm": options.share_norm, "tied": options.tied}
        )

    def pre_stages(self) -> list[PreStage]:
        stages = super().pre_stages()
        if not self.options.ptp:
            return stages
        return [*stages, RelabelStage("ptp", self.options.ptp_epochs, len(PTP_LABEL_NAMES), self.relabel)]

    def relabel(self, teacher_logits: Tensor, labels: Tensor) -> Relabeling:
        """PTP's four labels from the teacher's predictions, with the counts the report shows."""
        thresholds = self.options.ptp_thresholds
        four, t1, t2 = ptp_labels(teacher_logits, labels, None if thresholds == "median" else thresholds)
        named = dict(zip(PTP_LABEL_NAMES, torch.bincount(four, minlength=4).tolist(), strict=True))
        notes = [f"PTP labels (t1={t1:.3f}, t2={t2:.3f}): " + ", ".join(f"{n} {c}" for n, c in named.items())]
        notes += [
            f"warning: PTP label '{name}' holds {count} of {len(four)} images (under 1%)"
            for name, count in named.items()
            if count < 0.01 * len(four)
        ]
        return Relabeling(four, {"thresholds": [t1, t2], "label_counts": named}, notes)

    def report_sections(self) -> list[str]:
        ptp = self._report.get("ptp")
        if not ptp:
            return []
        t1, t2 = ptp["thresholds"]
        lines = [
            "## Pretraining with Teacher's Predictions",
            "",
            f"Thresholds: t1 = {t1:.4f} (correct), t2 = {t2:.4f} (wrong).",
            "",
            "| label | images |",
            "|---|---|",
        ]
        return [*lines, *(f"| {name} | {count:,} |" for name, count in ptp["label_counts"].items()), ""]
