"""What a teacher teaches, after Tang, Shivanna, Zhao, Lin, Singh, Chi and Jain, "Understanding and Improving Knowledge
Distillation" (arXiv 2002.03532): knowledge of the "universe" (a label-smoothing effect), domain knowledge (how the
classes relate), and instance-specific knowledge (how hard each example is) — measured on a teacher's outputs, and
the paper's synthetic teachers ("controls") that keep only some of it, usable as targets in ``distill``.

Notation: ``p = softmax(z_t/τ)``, ``c(x) = p[y]``, ``r(x)_j = p_j/(1 − c)`` for j ≠ y, K classes, π_k the class
frequencies. The class-relationship matrix ``R[k, j] = Σ_{y=k} p_j / Σ_{y=k} (1 − c)`` is the (1 − c)-weighted mean
of r — the weighting that makes the four-part decomposition below exact:

    E_x KL(p ‖ LS_ε) = Σ_k π_k·KL_B(c̄_k ‖ 1−ε) + E_x KL_B(c(x) ‖ c̄_y) + Σ_k π_k·E[1−c | k]·KL(R_k ‖ U)
                       + E_x[(1−c)·KL(r(x) ‖ R_y)]

(class-level confidence, instance confidence, class relationships, instance relationships; KL_B is the Bernoulli KL,
U uniform over the K − 1 wrong classes, ε = 1 − E[c] the matched smoothing). Everything is computed in float64 with
``0·log 0 = 0``, so a saturated teacher (c = 1) contributes exactly zero to the relationship terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcli.catalog import DkdOptions, MethodOptions, VanillaOptions
from kdcli.interfaces import MethodContext, ModelOutput, PreStage, TeacherPass
from kdcli.methods.base import Method

Control = Literal["full", "ls", "class", "partial", "partial+class"]
CONTROLS_NEEDING_A_PASS = ("ls", "class", "partial+class")
"""The controls built from statistics of the teacher over the training set (computed once, before training)."""
FLOOR = 1e-8
"""Control probabilities are clamped to this before the log, so a target's logits stay finite."""


@dataclass(frozen=True, kw_only=True)
class TeacherStatistics:
    """A teacher's tempered outputs summarized over a labelled data set."""

    confidence: Tensor
    """``c(x) = p[y]`` per example, (N,)."""
    class_frequency: Tensor
    """π_k, (K,)."""
    class_confidence: Tensor
    """``c̄_k = E[c | y = k]``, (K,)."""
    relationships: Tensor
    """``R``, (K, K): zero diagonal, each row sums to 1 (uniform for a class whose examples are all saturated)."""
    class_means: Tensor
    """``P̄[k, :] = E[p | y = k]``, (K, K)."""

    @property
    def smoothing(self) -> float:
        """The matched label smoothing ε = 1 − E[c]."""
        return 1.0 - float(self.confidence.mean())


def teacher_statistics(probabilities: Tensor, labels: Tensor) -> TeacherStatistics:
    """R, P̄, c̄ and π from a teacher's probabilities (N, K) at some temperature and the labels (N,)."""
    p = probabilities.double()
    classes = p.shape[1]
    one_hot = F.one_hot(labels, classes).double()
    counts = one_hot.sum(0)
    confidence = (p * one_hot).sum(1)
    wrong_mass = one_hot.T @ (p * (1 - one_hot))  # Σ_{y=k} p_j over j ≠ k
    relationships = wrong_mass / (one_hot.T @ (1 - confidence)).clamp_min(1e-300)[:, None]
    empty = relationships.sum(1) == 0  # every example of the class saturated (or the class absent): no information
    off_diagonal = 1 - torch.eye(classes, dtype=torch.float64)
    relationships[empty] = off_diagonal[empty] / (classes - 1)
    per_class = counts.clamp_min(1)
    return TeacherStatistics(
        confidence=confidence,
        class_frequency=counts / counts.sum(),
        class_confidence=(one_hot.T @ confidence) / per_class,
        relationships=relationships,
        class_means=(one_hot.T @ p) / per_class[:, None],
    )


def _xlogy_ratio(a: Tensor, b: Tensor) -> Tensor:
    """``a·log(a/b)`` with 0·log 0 = 0."""
    return torch.xlogy(a, a) - torch.xlogy(a, b)


def bernoulli_kl(a: Tensor, b: Tensor) -> Tensor:
    """``KL(Bern(a) ‖ Bern(b))``, elementwise."""
    return _xlogy_ratio(a, b) + _xlogy_ratio(1 - a, 1 - b)


def decomposition(probabilities: Tensor, labels: Tensor, stats: TeacherStatistics) -> dict[str, float]:
    """The four parts of ``E_x KL(p ‖ LS_ε)``, in nats, and that KL computed directly (``total``)."""
    p = probabilities.double()
    classes = p.shape[1]
    one_hot = F.one_hot(labels, classes).double()
    c = stats.confidence
    epsilon = torch.tensor(stats.smoothing, dtype=torch.float64)
    smoothed = torch.where(one_hot.bool(), 1 - epsilon, epsilon / (classes - 1))
    total = _xlogy_ratio(p, smoothed).sum(1).mean()
    pi = stats.class_frequency
    class_level = (pi * bernoulli_kl(stats.class_confidence, 1 - epsilon)).sum()
    instance_confidence = bernoulli_kl(c, stats.class_confidence[labels]).mean()
    relation_kl = relationship_divergence(stats)
    wrong_mass = (one_hot.T @ (1 - c)) / (one_hot.sum(0).clamp_min(1))
    class_relationships = (pi * wrong_mass * relation_kl).sum()
    # (1 − c)·KL(r ‖ R_y) = Σ_{j≠y} p_j·log(p_j / ((1 − c)·R_yj)), with 0·log 0 = 0 when the teacher is saturated
    wrong = p * (1 - one_hot)
    reference = torch.where(one_hot.bool(), 1.0, (1 - c)[:, None] * stats.relationships[labels])
    instance_relationships = _xlogy_ratio(wrong, reference).sum(1).mean()
    return {
        "class_confidence": float(class_level),
        "instance_confidence": float(instance_confidence),
        "class_relationships": float(class_relationships),
        "instance_relationships": float(instance_relationships),
        "total": float(total),
    }


def relationship_divergence(stats: TeacherStatistics) -> Tensor:
    """``KL(R_k ‖ U)`` per class (K,): how far from uniform the teacher spreads each class's wrong mass."""
    classes = stats.relationships.shape[0]
    return _xlogy_ratio(stats.relationships, torch.tensor(1 / (classes - 1), dtype=torch.float64)).sum(1)


def gradient_rescaling(
    teacher_logits: Tensor,
    student_logits: Tensor,
    labels: Tensor,
    temperature: float,
    ce_weight: float,
    kd_weight: float,
) -> Tensor:
    """``w(x) = γ + α·T·(p_t,y − p_s,y) / (1 − q_y)``: for ``L = γ·CE(z_s, y) + α·T²·KL(p_t ‖ p_s)`` the gradient on the
    true-class logit over plain CE's (``q = softmax(z_s)``). Below γ the teacher damps the example; below 0 KD pushes
    the true-class logit down."""
    rows = torch.arange(labels.numel())
    p_t = torch.softmax(teacher_logits.double() / temperature, 1)[rows, labels]
    p_s = torch.softmax(student_logits.double() / temperature, 1)[rows, labels]
    q = torch.softmax(student_logits.double(), 1)[rows, labels]
    return ce_weight + kd_weight * temperature * (p_t - p_s) / (1 - q).clamp_min(1e-12)


def control_distribution(
    control: Control,
    teacher_probabilities: Tensor,
    labels: Tensor,
    smoothing: Tensor,
    class_means: Tensor,
    relationships: Tensor,
) -> Tensor:
    """The distribution a control teacher gives each example (rows sum to 1):

    - ``ls``: 1 − ε on y, ε/(K − 1) elsewhere (ε the matched smoothing): the universe only;
    - ``class``: ``P̄_y``, the teacher's mean output for the class: universe and domain knowledge, no instance;
    - ``partial``: ``c(x)`` on y, ``(1 − c(x))/(K − 1)`` elsewhere: the instance's confidence, no relationships;
    - ``partial+class``: ``c(x)`` on y, ``(1 − c(x))·R_y`` elsewhere: confidence per instance, relationships per class;
    - ``full``: the teacher itself.
    """
    p = teacher_probabilities.float()
    classes = p.shape[1]
    true = F.one_hot(labels, classes).bool()
    if control == "full":
        return p
    if control == "class":
        return class_means[labels].float()
    if control == "ls":
        epsilon = smoothing.float()
        return torch.where(true, 1 - epsilon, epsilon / (classes - 1))
    confidence = (p * true).sum(1, keepdim=True)
    rest = relationships[labels].float() if control == "partial+class" else torch.full_like(p, 1 / (classes - 1))
    return torch.where(true, confidence, (1 - confidence) * rest)


def control_logits(distribution: Tensor, temperature: float) -> Tensor:
    """Logits whose softmax at T is ``distribution`` (clamped away from 0): ``T·log p``, so the loss is unchanged."""
    return temperature * distribution.clamp_min(FLOOR).log()


class ControlTarget(torch.nn.Module):
    """A control teacher as a teacher-side transform: ``teacher_logits → T·log p_ctrl``. The statistics a control needs
    (ε, P̄, R at the method's T) are buffers filled by ``fit`` from one pass of the teacher over the training set before
    training (the engine's ``TeacherPass``), so a resumed run reads them from its checkpoint."""

    smoothing: Tensor
    class_means: Tensor
    relationships: Tensor

    def __init__(self, control: Control, classes: int, temperature: float) -> None:
        super().__init__()
        self.control = control
        self.temperature = temperature
        self.register_buffer("smoothing", torch.zeros(()))
        self.register_buffer("class_means", torch.full((classes, classes), 1 / classes))
        self.register_buffer("relationships", torch.full((classes, classes), 1 / (classes - 1)))

    def fit(self, teacher_logits: Tensor, labels: Tensor) -> dict[str, float]:
        stats = teacher_statistics(torch.softmax(teacher_logits.double().cpu() / self.temperature, 1), labels.cpu())
        self.smoothing.fill_(stats.smoothing)
        self.class_means.copy_(stats.class_means)
        self.relationships.copy_(stats.relationships)
        return {
            "temperature": self.temperature,
            "matched_smoothing": stats.smoothing,
            "mean_confidence": float(stats.confidence.mean()),
        }

    def forward(self, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        probabilities = torch.softmax(teacher_logits.float() / self.temperature, 1)
        distribution = control_distribution(
            self.control, probabilities, labels, self.smoothing, self.class_means, self.relationships
        )
        return control_logits(distribution, self.temperature)


def control_for(target: Control, classes: int, temperature: float) -> ControlTarget | None:
    """The control a logit method's ``target`` option asks for, or None for the teacher itself."""
    return None if target == "full" else ControlTarget(target, classes, temperature)


def control_stages(control: ControlTarget | None) -> list[PreStage]:
    """The teacher pass a control needs before training (``ls``, ``class``, ``partial+class``), else none."""
    if control is None or control.control not in CONTROLS_NEEDING_A_PASS:
        return []
    return [TeacherPass("control", control.fit)]


class ControlTargetMethod(Method):
    """A logit method whose ``target`` option may put a control teacher in the teacher's place (vanilla, pea, dkd):
    ``teacher_targets`` is the control's output, and ``pre_stages`` the teacher pass the control needs."""

    options: VanillaOptions | DkdOptions

    def __init__(self, options: MethodOptions, context: MethodContext) -> None:
        super().__init__(options, context)
        self.control = control_for(self.options.target, context.num_classes, self.options.temperature)

    def teacher_targets(self, teacher: ModelOutput, labels: Tensor) -> Tensor:
        return teacher.logits if self.control is None else self.control(teacher.logits, labels)

    def pre_stages(self) -> list[PreStage]:
        return control_stages(self.control)
