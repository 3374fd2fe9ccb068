"""Run configuration. The pydantic models below are the one source of truth for every setting.

Layers are merged in this order, later ones winning (product.md):
defaults < preset < ``--config FILE`` < command-line flags < ``--set key.path=value``.
Every leaf remembers the layer that set it, so ``kdcli config show`` can say where each value came from,
and a validation error can say which layer gave the bad value.

Presets and config files are plain YAML read with ``yaml.safe_load``: no tags, nothing that runs code.
A preset may name another preset as its ``base`` (merged first) and carry a one-line ``description``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdcli.catalog import method_spec
from kdcli.errors import UsageError
from kdcli.suggest import did_you_mean

DataName = Literal["embedded", "fashion-mnist", "cifar10", "cifar100", "imagefolder"]


class Section(BaseModel):
    """A configuration section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ModelSpec(Section):
    """A teacher or a student."""

    arch: str | None = Field(None, description="timm or CIFAR-zoo name; for a teacher file, read from its metadata")
    checkpoint: str | None = Field(None, description="safetensors file (kdcli:NAME for a file shipped with kdcli)")
    pretrained: bool = Field(False, description="timm hub weights (needs network)")
    in_chans: int | None = Field(None, ge=1, description="input channels; default: the data's, or the checkpoint's")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model arguments")


class DataConfig(Section):
    name: DataName = "embedded"
    dir: str | None = Field(None, description="data folder; default: $KDCLI_DATA_DIR, then the system folders")
    download: bool = Field(False, description="download CIFAR when missing (needs network)")
    train_subset: int | None = Field(None, ge=1, description="stratified, seeded subset of the training set")
    val_split: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of train held out; best epoch is chosen on it")
    subset_seed: int = Field(0, description="seed of the subset and the val split (fixed across training seeds)")
    image_size: int | None = Field(None, ge=8, description="pad small images to this size (FMNIST: 32)")
    crop_padding: int = Field(4, ge=0, description="random-crop padding; 0 turns cropping off")
    hflip: bool = True
    drop_last: bool = Field(
        False, description="leave out each epoch's last partial training batch (timm's loaders and the plain loop do)"
    )
    workers: int = Field(4, ge=0, description="loader processes for imagefolder")
    eval_split: Literal["test", "val"] = "test"


class OptimizerConfig(Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    lr_batch_size: int | None = Field(
        None, ge=1, description="the batch size lr is given for: rates scale linearly to train.batch_size"
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False


class ScheduleConfig(Section):
    """Learning-rate schedule, applied per step as a function of the fractional epoch."""

    name: Literal["step", "cosine", "onecycle", "constant"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    gamma: float = Field(0.1, gt=0.0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    warmup_fraction: float | None = Field(
        None, gt=0.0, lt=1.0, description="warm-up as a fraction of the run (onecycle: torch's pct_start; 0.3 if unset)"
    )
    final_factor: float = Field(0.0, ge=0.0, le=1.0, description="cosine: the last rate as a fraction of lr")
    cycle_momentum: bool = Field(
        False, description="onecycle with sgd: momentum max_momentum → base_momentum at the peak → max_momentum"
    )
    base_momentum: float = Field(0.85, ge=0.0, lt=1.0, description="cycle_momentum: the momentum at the peak rate")
    max_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="cycle_momentum: the momentum at both ends")

    @model_validator(mode="after")
    def _one_warmup_and_a_cycle_onecycle_has(self) -> ScheduleConfig:
        if self.warmup_epochs > 0 and self.warmup_fraction is not None:
            raise ValueError("give warmup_epochs or warmup_fraction, not both")
        if self.cycle_momentum and self.name != "onecycle":
            raise ValueError(f"cycle_momentum belongs to the onecycle schedule, not {self.name!r}")
        if self.cycle_momentum and self.base_momentum > self.max_momentum:
            raise ValueError(f"base_momentum {self.base_momentum} is above max_momentum {self.max_momentum}")
        return self

    def warmup(self, epochs: int) -> float:
        """The warm-up's length in epochs: ``warmup_epochs``, else ``warmup_fraction`` of the run, else 30 % of it
        for ``onecycle`` (torch's OneCycleLR default) and none for the other schedules."""
        if self.warmup_epochs > 0:
            return self.warmup_epochs
        if self.warmup_fraction is not None:
            return self.warmup_fraction * epochs
        return 0.3 * epochs if self.name == "onecycle" else 0.0


class TrainConfig(Section):
    epochs: int = Field(240, ge=1)
    batch_size: int = Field(64, ge=1, description="the global batch: under torchrun it is split over the processes")
    eval_batch_size: int = Field(512, ge=1)
    seed: int = Field(0, ge=0, lt=2**32, description="seeds the student's weights and the order of the batches")
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto: bf16 on CUDA, else fp32")
    channels_last: bool | None = Field(None, description="channels-last memory format; default: on for CUDA")
    compile: bool | None = Field(None, description="torch.compile the forwards; default: on for CUDA")
    cuda_graphs: bool | None = Field(
        None, description="capture the whole training step in a CUDA graph; default: on for CUDA unless fp16"
    )
    allow_untrained_teacher: bool = Field(False, description="distill from random teacher weights (smoke tests)")
    sync_batchnorm: bool = Field(
        False, description="under torchrun, the student's BatchNorm over the global batch (SyncBatchNorm; CUDA only)"
    )

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, value: str) -> str:
        return device_name(value)


def device_name(value: str) -> str:
    """``value`` when it names a device kdcli runs on (auto, cpu, cuda, cuda:N, mps), else a ValueError."""
    head, _, index = value.partition(":")
    if head not in ("auto", "cpu", "cuda", "mps") or (index and not (head == "cuda" and index.isdigit())):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {value!r}")
    return value


class MethodConfig(BaseModel):
    """The method and its options; the options are validated by the method's own options model (kdcli.catalog)."""

    model_config = ConfigDict(extra="allow")

    name: str = "vanilla"


class OutputConfig(Section):
    dir: str | None = Field(None, description="run directory; default: <root>/<time>-<method>-<teacher>-<student>")
    root: str = "runs"


class RunConfig(Section):
    """Everything a run needs; ``config.yaml`` in a run directory is this model, and repeats the run alone."""

    teacher: ModelSpec = Field(default_factory=lambda: ModelSpec())
    student: ModelSpec = Field(default_factory=lambda: ModelSpec())
    method: MethodConfig = Field(default_factory=lambda: MethodConfig())
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    optim: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig())
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    output: OutputConfig = Field(default_factory=lambda: OutputConfig())

    @model_validator(mode="after")
    def _momentum_cycles_with_sgd(self) -> RunConfig:
        if self.schedule.cycle_momentum and self.optim.name != "sgd":
            raise ValueError("schedule.cycle_momentum cycles SGD's momentum; use optim.name sgd or turn it off")
        return self

    @property
    def method_options(self) -> dict[str, Any]:
        return dict(self.method.model_extra or {})

    @property
    def lr_scale(self) -> float:
        """What every configured learning rate is multiplied by: ``batch_size / lr_batch_size``, the linear scaling
        rule of Goyal et al. 2017 ("Accurate, Large Minibatch SGD"), or 1 when ``lr_batch_size`` is unset."""
        return self.train.batch_size / self.optim.lr_batch_size if self.optim.lr_batch_size else 1.0


Layer = tuple[str, dict[str, Any]]


@dataclass
class ResolvedConfig:
    """A validated configuration and, for every leaf key, the layer that set it."""

    config: RunConfig
    sources: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for every leaf, in schema order."""
        return [(key, value, self.sources.get(key, "default")) for key, value in flatten(dump(self.config)).items()]


def dump(config: RunConfig) -> dict[str, Any]:
    """The configuration as plain YAML/JSON-able data (method options included)."""
    return config.model_dump(mode="json")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested mapping under dotted keys; lists are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def parse_set(assignment: str) -> dict[str, Any]:
    """``a.b.c=value`` as a nested mapping; the value is read as YAML (numbers, booleans, lists)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise UsageError(f"--set expects key.path=value, got {assignment!r} (example: --set optim.lr=0.1)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {key}: cannot read {raw!r} as a value ({exc.__class__.__name__})") from None
    return nested(key.strip(), value)


def nested(key: str, value: Any) -> dict[str, Any]:
    """``nested("a.b", 1) == {"a": {"b": 1}}``: one dotted key as a configuration layer."""
    tree: dict[str, Any] = {}
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return tree


def presets_dir() -> Path:
    """The shipped presets: inside the wheel as ``kdcli/presets``, in a source checkout at the top level."""
    packaged = Path(str(resources.files("kdcli"))) / "presets"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "presets"


def list_presets() -> dict[str, str]:
    """Preset name → its one-line description."""
    found = {}
    for path in sorted(presets_dir().glob("*.yaml")):
        found[path.stem] = str(read_yaml(path).get("description", ""))
    return found


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file, so not a YAML configuration; pass a .yaml file") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of configuration sections, not a {type(data).__name__}")
    return data


def load_preset(name_or_path: str, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset by name (``kdcli presets`` lists them) or by YAML path, with its ``base`` chain merged in (``chain``:
    the presets that named this one as their base, so a loop is an error rather than an endless recursion)."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = presets_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            names = sorted(list_presets())
            hint = did_you_mean(name_or_path, names)
            raise UsageError(f"unknown preset {name_or_path!r}; {hint}`kdcli presets` lists the {len(names)} presets")
    if path.resolve() in chain:
        loop = " → ".join(p.stem for p in (*chain, path.resolve()))
        raise UsageError(f"the presets' base chain loops ({loop}); a preset cannot be its own base")
    data = read_yaml(path)
    data.pop("description", None)
    base = data.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise UsageError(f"{path}: base must be a preset name or file, not {base!r}")
    return deep_merge(load_preset(base, (*chain, path.resolve())), data) if base else data


def resolve(layers: list[Layer]) -> ResolvedConfig:
    """Merge the layers (lowest precedence first), validate, and record where every leaf came from."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, tree in layers:
        merged = deep_merge(merged, tree)
        for key in flatten(tree):
            sources[key] = source
    try:
        config = RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise UsageError(_explain(exc, RunConfig, "", sources)) from None
    config = _validate_method_options(config, sources)
    # A leaf set by a layer may be a whole section collapsed to one key; record leaves it implies too.
    for key in flatten(dump(config)):
        parent = next((p for p in _prefixes(key) if p in sources), None)
        if key not in sources and parent is not None:
            sources[key] = sources[parent]
    return ResolvedConfig(config, sources)


def data_config(**values: Any) -> DataConfig:
    """A ``DataConfig`` from a command's own flags (``eval``, ``analyze``): a bad value is a one-line usage error
    that names the flag, as ``resolve`` does for a run's configuration."""
    try:
        return DataConfig.model_validate(values)
    except ValidationError as exc:
        flag_names = {"name": "data", "dir": "data-dir"}
        flags = {f"data.{key}": "--" + flag_names.get(key, key.replace("_", "-")) for key in values}
        raise UsageError(_explain(exc, DataConfig, "data.", flags)) from None


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _validate_method_options(config: RunConfig, sources: dict[str, str]) -> RunConfig:
    spec = method_spec(config.method.name)
    try:
        options = spec.options.model_validate(config.method_options)
    except ValidationError as exc:
        raise UsageError(_explain(exc, spec.options, "method.", sources, fixed=["name"])) from None
    method = MethodConfig.model_validate({"name": config.method.name, **options.model_dump(mode="json")})
    return config.model_copy(update={"method": method})


def _section_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (sub)model that holds the key at ``loc``."""
    for part in loc[:-1]:
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _explain(
    exc: ValidationError, model: type[BaseModel], prefix: str, sources: dict[str, str], fixed: list[str] | None = None
) -> str:
    """One line for the first validation error: the key, what is wrong, the valid choices, and where it came from."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = prefix + ".".join(str(part) for part in loc)
    origin = sources.get(key)
    where = f" (from {origin})" if origin else ""
    if error["type"] == "extra_forbidden":
        valid = (fixed or []) + _section_fields(model, loc)
        hint = did_you_mean(str(loc[-1]), valid, n=1)
        return f"unknown configuration key {key!r}{where}; {hint}valid keys here: {', '.join(valid)}"
    message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
    return f"invalid value for {key!r}{where}: {message} (got {error.get('input')!r})"
