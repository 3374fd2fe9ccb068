"""What exists — distillation methods, student transforms, the CIFAR model zoo — with names, summaries, options and
where the code lives, known without importing torch or timm (so ``kdcli methods``, ``kdcli models`` and
``kdcli config show`` answer at once).

A method is described once, by a ``MethodSpec`` — name, summary, options model, whether it needs a teacher, and the
import path of the implementation, imported only when a run builds the method. The implementation, a
``kdcli.methods.Method`` subclass, declares ``spec = ITS_SPEC`` and reads those facts from it. Built-in and
third-party methods register the same way, through the entry-point group ``kdcli.methods`` (the old name
``kdcli.strategies`` is still read): an entry names the spec, or the method class, which is then read through its own
``spec``. Student transforms come from ``kdcli.student_transforms``: an entry names a function
``transform(model, **options) -> model``. A plugin that fails to load is listed as broken with its one-line reason
and never breaks another command.

The options of the built-in methods are defined here, next to their specs; each implementation in
``kdcli/methods/`` cites its paper and says where kdcli made a choice.
"""

from __future__ import annotations

import importlib
from dataclasses import KW_ONLY, dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdcli.errors import UsageError, one_line
from kdcli.records import Settings
from kdcli.suggest import did_you_mean

METHOD_GROUPS = ("kdcli.methods", "kdcli.strategies")
TRANSFORM_GROUP = "kdcli.student_transforms"


@dataclass(frozen=True)
class ZooModel:
    """A CIFAR zoo model (kdcli.models registers it into timm): its timm name, RepDistiller's name, and its
    parameters at 100 classes (a test holds these against the built models)."""

    name: str
    repdistiller_name: str
    parameters_100_classes: int


ZOO: tuple[ZooModel, ...] = tuple(
    ZooModel(*row)
    for row in (
        ("resnet8", "resnet8", 83_892),
        ("resnet14", "resnet14", 181_108),
        ("resnet20", "resnet20", 278_324),
        ("resnet32", "resnet32", 472_756),
        ("resnet44", "resnet44", 667_188),
        ("resnet56", "resnet56", 861_620),
        ("resnet110", "resnet110", 1_736_564),
        ("resnet8x4", "resnet8x4", 1_233_540),
        ("resnet32x4", "resnet32x4", 7_433_860),
        ("wrn_16_1", "wrn_16_1", 180_916),
        ("wrn_16_2", "wrn_16_2", 703_284),
        ("wrn_40_1", "wrn_40_1", 569_780),
        ("wrn_40_2", "wrn_40_2", 2_255_156),
        ("vgg8_cifar", "vgg8", 3_965_028),
        ("vgg11_cifar", "vgg11", 9_277_284),
        ("vgg13_cifar", "vgg13", 9_462_180),
        ("vgg16_cifar", "vgg16", 14_774_436),
        ("vgg19_cifar", "vgg19", 20_086_692),
        ("mobilenetv2_cifar", "MobileNetV2", 812_836),
        ("shufflenetv1_cifar", "ShuffleV1", 949_258),
        ("shufflenetv2_cifar", "ShuffleV2", 1_355_528),
    )
)
ZOO_MODELS: tuple[str, ...] = tuple(model.name for model in ZOO)
ZOO_ALIASES: dict[str, str] = {
    m.repdistiller_name: m.name
    for m in ZOO
    if m.repdistiller_name != m.name and not m.repdistiller_name.startswith("vgg1")
}
"""RepDistiller's own spellings that timm does not know, mapped to the zoo's names."""
TIMM_SHADOWED: dict[str, str] = {m.repdistiller_name: m.name for m in ZOO if m.repdistiller_name.startswith("vgg1")}
"""RepDistiller's spellings that are timm's ImageNet models; a user typing one may have meant the CIFAR model."""


class MethodOptions(Settings):
    """Base of a method's options (``method.*`` in the configuration): unknown keys are errors, numbers are finite,
    and a boolean is not a number."""


@dataclass(frozen=True)
class MethodSpec:
    """A method's one description, known before its code is imported: the ``Method`` subclass that implements it
    declares ``spec = THIS_SPEC`` and reads its name, summary, options model and ``needs_teacher`` from here."""

    name: str
    summary: str
    options: type[MethodOptions]
    implementation: str
    """``"package.module:Class"``, a ``kdcli.methods.Method`` subclass whose ``spec`` is this one."""
    _: KW_ONLY
    needs_teacher: bool = True

    def load(self) -> Any:
        """The implementation (imports its module, and so torch); the training layer checks it is a Method."""
        module_name, _, attribute = self.implementation.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise UsageError(
                f"method {self.name!r}: cannot import {self.implementation} ({one_line(error, named=True)})"
            ) from None


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that could not be loaded, and why, in one line."""

    name: str
    value: str
    reason: str


# --- the built-in methods' options -------------------------------------------------------------------------------


class SupervisedOptions(MethodOptions):
    pass


Target = Literal["full", "ls", "class", "partial", "partial+class"]
TARGET_HELP = "the teacher (full), or a control keeping part of its knowledge: ls, class, partial, partial+class"


class VanillaOptions(MethodOptions):
    """Defaults are the CIFAR-100 recipe of RepDistiller / the CRD paper: T=4, γ=0.1, α=0.9."""

    temperature: float = Field(4.0, gt=0.0)
    ce_weight: float = Field(0.1, ge=0.0, description="γ, weight of the cross-entropy with the labels")
    kd_weight: float = Field(0.9, ge=0.0, description="α, weight of T²·KL(teacher ‖ student)")
    target: Target = Field("full", description=TARGET_HELP + " (Tang et al. 2020)")
    logit_standardization: bool = Field(
        False,
        description="z-score each logit vector (teacher's and student's) before the temperature softmax of the KD "
        "term (Sun et al. 2024); kdcli keeps T and the weights, the paper's code moves them to T=2, KD weight 9",
    )


class TransformedTeacherOptions(VanillaOptions):
    """A trainable teacher-side transform and how fast it may move (kdcli.methods.transformed)."""

    anchor_weight: float = Field(
        1.0, ge=0.0, description="λ, weight of CE(transformed teacher, labels); kdcli's default, 0 is the literal paper"
    )
    transform_lr_ratio: float = Field(
        0.002, gt=0.0, description="the transform's learning rate as a fraction of the student's (schedule included)"
    )
    transform_weight_decay: float = Field(5e-4, ge=0.0, description="weight decay of the transform's parameters")
    transform_warmup_epochs: float = Field(
        0.0, ge=0.0, description="epochs the transform stays frozen at the start (the student is still random)"
    )
    transform_lr: None = Field(None, exclude=True, description="removed in 0.2.0: use transform_lr_ratio")

    @field_validator("target")
    @classmethod
    def _no_control_under_a_transform(cls, value: str) -> str:
        if value != "full":
            raise ValueError(
                "a teacher-side transform (pesf, skd) already reshapes the teacher; the controls as targets work with "
                "vanilla, pea and dkd"
            )
        return value

    @field_validator("transform_lr", mode="before")
    @classmethod
    def _transform_lr_was_removed(cls, value: object) -> None:
        if value is not None:
            raise ValueError(
                "transform_lr (an absolute rate) was removed in 0.2.0; set method.transform_lr_ratio, the transform's "
                "rate as a fraction of the student's (the released PESF code's 2e-5 against lr 0.05 is 4e-4)"
            )
        return None


class PesfOptions(TransformedTeacherOptions):
    transform_lr_ratio: float = Field(
        4e-4, gt=0.0, description="the adapter's learning rate as a fraction of the student's (the released code's)"
    )
    hidden: int = Field(32, ge=1, description="h, width of the adapter's bottleneck")
    adapter_arch: Literal["parallel", "serial"] = Field(
        "parallel", description="parallel: linear + bottleneck branches (NLP code); serial: linear then bottleneck"
    )
    swap_correction: bool = Field(False, description="put the true class on top of the student's target (code)")
    adapter_target: Literal["joint", "detached-student"] = Field(
        "joint", description="joint: the KL term trains student and adapter (paper); detached-student: as the code"
    )


class SkdOptions(TransformedTeacherOptions):
    axis: Literal["batch", "class"] = Field("batch", description="tokens: the examples of a batch, or the classes")
    width: int | None = Field(None, ge=1, description="d_k, the attention width; default: the number of classes")


Confidence = Annotated[float, Field(gt=0.0, lt=1.0)]


class SpsOptions(BaseModel):
    """The options of the student transform ``sps`` (kdcli.models.sps), as a model file records them: JSON booleans
    only (strict: "false" or 0 there means the metadata is damaged, not an option turned off), and no other keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    shuffle: bool = True
    share_norm: bool = False
    tied: bool = True


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


class DkdOptions(MethodOptions):
    """Defaults are mdistiller's CIFAR-100 ones (its ``cfg.py``): CE 1, α 1, β 8, T 4, warm-up 20 epochs."""

    temperature: float = Field(4.0, gt=0.0)
    ce_weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy with the labels")
    alpha: float = Field(1.0, ge=0.0, description="α, weight of TCKD (target-class KD)")
    beta: float = Field(8.0, ge=0.0, description="β, weight of NCKD (non-target-class KD)")
    warmup_epochs: float = Field(20.0, ge=0.0, description="the KD terms ramp up linearly over these epochs")
    target: Target = Field("full", description=TARGET_HELP)
    logit_standardization: bool = Field(
        False,
        description="z-score each logit vector (teacher's and student's) before the temperature softmax of the KD "
        "term (Sun et al. 2024); kdcli keeps T and the weights, the paper's code moves them to T=2, KD weight 9",
    )


class DistOptions(MethodOptions):
    """Defaults are the paper's CIFAR-100 ones (Huang et al. 2022, its code's ``DIST(beta=2, gamma=2, tau=4)`` with
    CE weight 1); on ImageNet the paper used β = γ = τ = 1."""

    temperature: float = Field(4.0, gt=0.0, description="τ, the softmax temperature of both predictions")
    ce_weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy with the labels")
    beta: float = Field(2.0, ge=0.0, description="β, weight of the inter-class relation (per example, over classes)")
    gamma: float = Field(2.0, ge=0.0, description="γ, weight of the intra-class relation (per class, over the batch)")


class FitnetOptions(MethodOptions):
    """Defaults are mdistiller's CIFAR-100 ones: hint stage 2, CE 1, hint 100."""

    hint_stage: int = Field(2, description="stage index (feature_info) of the hint, the same in student and teacher")
    ce_weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy with the labels")
    hint_weight: float = Field(100.0, ge=0.0, description="weight of the MSE between regressed and teacher hint")

    @field_validator("hint_stage")
    @classmethod
    def _stages_count_from_0(cls, value: int) -> int:
        if value < 0:
            raise ValueError(
                "stages count from 0 (the first feature_info stage) and a negative index is not one; give 0 or more"
            )
        return value


SUPERVISED = MethodSpec(
    "none",
    "no distillation: cross-entropy with the labels (kdcli train)",
    SupervisedOptions,
    "kdcli.methods.supervised:Supervised",
    needs_teacher=False,
)
VANILLA = MethodSpec(
    "vanilla",
    "Hinton et al. 2015: cross-entropy plus T²-scaled KL to the teacher's softened logits",
    VanillaOptions,
    "kdcli.methods.vanilla:Vanilla",
)
PESF = MethodSpec(
    "pesf",
    "Rao et al. 2022: a small adapter on the frozen teacher makes its soft labels student-friendly "
    "(defaults: adapter at 4e-4 × the student's lr as in the released code, CE anchor λ=1)",
    PesfOptions,
    "kdcli.methods.pesf:Pesf",
)
SKD = MethodSpec(
    "skd",
    "Yuan et al. 2023: an attention 'learning simplifier' softens the teacher's output (reconstruction; "
    "kdcli defaults: CE anchor λ=1, simplifier at 0.002 × the student's lr)",
    SkdOptions,
    "kdcli.methods.skd:Skd",
)
PEA = MethodSpec(
    "pea",
    "Cho & Kang 2020: shuffled parameter sharing in the student + pretraining on the teacher's predictions",
    PeaOptions,
    "kdcli.methods.pea:Pea",
)
DKD = MethodSpec(
    "dkd",
    "Zhao et al. 2022: KD decoupled into target-class and non-target-class terms, with warm-up",
    DkdOptions,
    "kdcli.methods.dkd:Dkd",
)
DIST = MethodSpec(
    "dist",
    "Huang et al. 2022: match the Pearson correlation of the predictions, per example and per class, instead of KL "
    "(robust to a large teacher–student gap)",
    DistOptions,
    "kdcli.methods.dist:Dist",
)
FITNET = MethodSpec(
    "fitnet",
    "Romero et al. 2015: a regressor maps a student stage onto the teacher's (hint)",
    FitnetOptions,
    "kdcli.methods.fitnet:Fitnet",
)


# --- discovery ---------------------------------------------------------------------------------------------------


def _method_entries() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for group in reversed(METHOD_GROUPS):  # the current group wins over the old one
        found.update({entry.name: entry for entry in entry_points(group=group)})
    return found


def _spec_of(entry: EntryPoint) -> MethodSpec:
    """The spec an entry point names: a ``MethodSpec``, or a ``Method`` subclass read through the spec it declares."""
    loaded = entry.load()
    spec = vars(loaded).get("spec") if isinstance(loaded, type) else loaded
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"{entry.value} is neither a kdcli MethodSpec nor a Method subclass that declares its spec")
    if spec.name != entry.name:
        raise ValueError(f"the entry point {entry.name!r} names the spec of {spec.name!r}; give both the same name")
    if isinstance(loaded, type) and spec.load() is not loaded:
        raise TypeError(f"the spec of {entry.value} names another class as its implementation: {spec.implementation}")
    return spec


def catalog() -> dict[str, MethodSpec | BrokenPlugin]:
    """Every registered method by name (``kdcli methods``); a plugin that fails to load is a ``BrokenPlugin``."""
    specs: dict[str, MethodSpec | BrokenPlugin] = {}
    for name, entry in sorted(_method_entries().items()):
        try:
            specs[name] = _spec_of(entry)
        except Exception as error:  # a third-party plugin can fail in any way; it is reported, not raised
            specs[name] = BrokenPlugin(name, entry.value, one_line(error, named=True))
    return specs


def method_spec(name: str) -> MethodSpec:
    """One method by name; only its own entry point is loaded, so a broken plugin cannot break the others."""
    if name == SUPERVISED.name:
        return SUPERVISED
    entries = _method_entries()
    if name not in entries:
        hint = did_you_mean(name, entries, n=1)
        raise UsageError(f"unknown method {name!r}; {hint}available: {', '.join(sorted(entries))}")
    try:
        return _spec_of(entries[name])
    except Exception as error:
        reason = one_line(error, named=True)
        raise UsageError(f"the method plugin {name!r} ({entries[name].value}) is broken: {reason}") from None


def student_transform(name: str) -> Any:
    """The registered student transform ``name``: a function ``(model, **options) -> model``."""
    entries = {entry.name: entry for entry in entry_points(group=TRANSFORM_GROUP)}
    if name not in entries:
        raise UsageError(
            f"the student transform {name!r} is not installed (known: {', '.join(sorted(entries)) or 'none'}); "
            "install the package that provides it"
        )
    try:
        return entries[name].load()
    except Exception as error:
        raise UsageError(f"the student transform {name!r} is broken: {one_line(error, named=True)}") from None
