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
leaves labels 2 and 3 nearly empty on clean images); the PTP stage uses the run's optimizer settings with a constant
learning rate; ``sps`` and ``ptp`` switch the parts off for ablations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdcli.data.loaders import TensorLoader
from kdcli.errors import UsageError
from kdcli.models.sps import apply_sps
from kdcli.strategies.vanilla import Vanilla, VanillaOptions

if TYPE_CHECKING:
    from kdcli.engine import Reporter, Run

Confidence = Annotated[float, Field(gt=0.0, lt=1.0)]
PTP_LABEL_NAMES = ("correct, confident", "correct, unsure", "wrong, confident", "wrong, unsure")


class PeaOptions(VanillaOptions):
    ce_weight: float = Field(0.3, ge=0.0, description="γ of the KD stage")
    kd_weight: float = Field(0.7, ge=0.0, description="α of the KD stage (the paper's 0.7)")
    sps: bool = Field(True, description="Shuffled Parameter Sharing in the student")
    shuffle: bool = Field(True, description="swap the paired weights in the second pass (false: plain sharing)")
    share_norm: bool = Field(False, description="ResNets: the second pass reuses the first pass's BatchNorms")
    tied: bool = Field(True, description="false: second passes get weights of their own (the same-MACs baseline)")
    ptp: bool = Field(True, description="Pretraining with Teacher's Predictions before KD")
    ptp_epochs: int = Field(5, ge=1, description="epochs of the 4-way PTP stage")
    ptp_thresholds: Literal["median"] | tuple[Confidence, Confidence] = Field(
        "median", description="t1, t2 for correct and wrong predictions: [t1, t2] (released code) or median (kdcli)"
    )


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

    name = "pea"
    summary = "Cho & Kang 2020: shuffled parameter sharing in the student + pretraining on the teacher's predictions"
    Options = PeaOptions
    options: PeaOptions

    def transform_student(self, student: nn.Module) -> nn.Module:
        if not self.options.sps:
            return student
        return apply_sps(student, self.options.shuffle, self.options.share_norm, self.options.tied)

    def pre_stage(self, run: Run, reporter: Reporter) -> None:
        if not self.options.ptp:
            return
        assert run.teacher is not None
        train = run.data.train
        if not isinstance(train, TensorLoader):
            raise UsageError("PTP needs an in-memory data set; with imagefolder use --set method.ptp=false")
        # One augmented view per image, in order: the labels stay attached to their images.
        views = TensorLoader(train.images, train.labels, run.config.train.eval_batch_size, run.device,
                             crop_padding=train.crop_padding, hflip=train.hflip, seed=train.seed + 7919)  # fmt: skip
        views.set_epoch(-1)
        logits = []
        with torch.no_grad():
            for images, _ in views:
                with run.autocast():
                    logits.append(run.teacher.module.predict(images).logits.float())
        thresholds = self.options.ptp_thresholds
        four, t1, t2 = ptp_labels(torch.cat(logits), train.labels, None if thresholds == "median" else thresholds)
        counts = torch.bincount(four, minlength=4).tolist()
        named = dict(zip(PTP_LABEL_NAMES, counts, strict=True))
        self._report["ptp"] = {"thresholds": [t1, t2], "label_counts": named}
        reporter.note(f"PTP labels (t1={t1:.3f}, t2={t2:.3f}): " + ", ".join(f"{n} {c}" for n, c in named.items()))
        for name, count in named.items():
            if count < 0.01 * len(four):
                reporter.note(f"warning: PTP label '{name}' holds {count} of {len(four)} images (under 1%)")
        self._pretrain(run, train, four, reporter)

    def _pretrain(self, run: Run, train: TensorLoader, four: Tensor, reporter: Reporter) -> None:
        student: Any = run.student.model
        student.reset_classifier(4)
        student.to(run.device)
        optim = run.config.optim
        optimizer = torch.optim.SGD(run.student.parameters(), lr=optim.lr * run.config.lr_scale,
                                    momentum=optim.momentum, weight_decay=optim.weight_decay)  # fmt: skip
        loader = TensorLoader(train.images, four, train.batch_size, run.device, shuffle=True,
                              crop_padding=train.crop_padding, hflip=train.hflip, seed=train.seed + 7919)  # fmt: skip
        run.student.train()
        for epoch in range(self.options.ptp_epochs):
            loader.set_epoch(epoch)
            total = torch.zeros((), device=run.device)
            for images, targets in loader:
                with run.autocast():
                    loss = F.cross_entropy(run.student(images).float(), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * targets.numel()
            reporter.note(f"PTP epoch {epoch + 1}/{self.options.ptp_epochs}  loss {float(total) / len(four):.4f}")
        student.reset_classifier(self.num_classes)  # a fresh C-way classifier for the KD stage
        student.to(run.device)
