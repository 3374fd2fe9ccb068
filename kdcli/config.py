"""Run configuration. The pydantic models below are the one source of truth for every setting.

Layers are merged in this order, later ones winning (product.md):
defaults < preset < a configuration file < the command's own options < ``key.path=value`` assignments (the CLI's
layers; kdcli.cli.options).
Every leaf remembers the layer that set it, so ``kdcli config show`` can say where each value came from,
and a validation error can say which layer gave the bad value.

Presets, config files and assigned values are plain YAML read by a bounded ``yaml.SafeLoader``: no tags, nothing
that runs code, at most 1 MiB, no key twice in one mapping, and no anchors and aliases that expand past
100,000 values or 32 levels ("billion laughs"). A preset may name another preset as its ``base`` (merged first) and
carry a one-line ``description``. Numbers are finite, and a boolean is never taken for a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdcli.catalog import method_spec
from kdcli.errors import UsageError, option
from kdcli.records import Settings
from kdcli.suggest import did_you_mean

DataName = Literal["embedded", "fashion-mnist", "cifar10", "cifar100", "imagefolder"]

MAX_CONFIG_BYTES = 1 << 20
"""A configuration file is a few KiB (a run's config.yaml about 3); past 1 MiB it is not one."""
MAX_YAML_VALUES = 100_000
"""Values in one YAML document once its aliases are expanded; a configuration holds a few hundred."""
MAX_YAML_DEPTH = 32
"""Nesting of one YAML document, aliases expanded; a configuration nests 2 to 5 levels deep."""
MAX_IMAGE_SIZE = 2048
"""``data.image_size`` at most: twice the largest input of timm's pretrained models (1024, SAM's ViTs)."""


class KeyedValueError(ValueError):
    """A model validator's error about keys that contradict each other (``values``: each key, relative to the model,
    with its value). It is reported as a field's own error is, under the key the latest layer set (the first key when
    no layer did), with that key's value and layer: the setting the user just gave is the one named."""

    def __init__(self, message: str, values: dict[str, Any]) -> None:
        super().__init__(message)
        self.values = values


class Section(Settings):
    """A configuration section: unknown keys are errors, numbers are finite, and a boolean is not a number."""


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
    image_size: int | None = Field(
        None, ge=8, description=f"pad small images to this size (FMNIST: 32); at most {MAX_IMAGE_SIZE}"
    )
    crop_padding: int = Field(4, ge=0, description="random-crop padding; 0 turns cropping off")
    hflip: bool = True
    drop_last: bool = Field(
        False, description="leave out each epoch's last partial training batch (timm's loaders and the plain loop do)"
    )
    mixup: float = Field(
        0.0, ge=0.0, description="α of mixup's Beta(α, α) for the training batches; 0 is off (consistent teaching)"
    )
    cutmix: float = Field(
        0.0, ge=0.0, description="α of CutMix's Beta(α, α); 0 is off; with mixup, one of the two a batch"
    )
    mix_prob: float = Field(1.0, gt=0.0, le=1.0, description="the probability that a batch is mixed (mixup, cutmix)")
    decode: Literal["host", "device"] = Field(
        "host",
        description="imagefolder: JPEGs decoded, cropped, flipped and resized on the GPU (nvJPEG; no colour "
        "jitter), or on the host",
    )
    workers: int | None = Field(
        None, ge=0, description="loader processes for imagefolder; default: one per CPU core (shared by torchrun's)"
    )
    eval_split: Literal["test", "val"] = "test"

    @field_validator("image_size")
    @classmethod
    def _image_size_fits_in_memory(cls, value: int | None) -> int | None:
        if value is not None and value > MAX_IMAGE_SIZE:
            gib = 3 * 4 * value**2 / 2**30
            raise ValueError(
                f"at most {MAX_IMAGE_SIZE} pixels, twice the largest input of timm's pretrained models (1024); one "
                f"{value}×{value} RGB image alone takes {gib:.1f} GiB as float32"
            )
        return value

    @model_validator(mode="after")
    def _mix_prob_needs_mixing(self) -> DataConfig:
        if self.mix_prob != 1.0 and self.mixup == 0 and self.cutmix == 0:
            raise KeyedValueError(
                "data.mix_prob is the chance that a batch is mixed, and nothing mixes: set data.mixup or data.cutmix "
                "(an α such as 0.2 or 1.0) too",
                {"mix_prob": self.mix_prob},
            )
        return self


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
            raise KeyedValueError(
                "give schedule.warmup_epochs or schedule.warmup_fraction, not both",
                {"warmup_fraction": self.warmup_fraction, "warmup_epochs": self.warmup_epochs},
            )
        if self.cycle_momentum and self.name != "onecycle":
            raise KeyedValueError(
                f"schedule.cycle_momentum belongs to the onecycle schedule, not {self.name!r}",
                {"cycle_momentum": True, "name": self.name},
            )
        if self.cycle_momentum and self.base_momentum > self.max_momentum:
            raise KeyedValueError(
                f"schedule.base_momentum {self.base_momentum} is above schedule.max_momentum {self.max_momentum}",
                {"base_momentum": self.base_momentum, "max_momentum": self.max_momentum},
            )
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
    eval_batch_size: int | None = Field(
        None,
        ge=1,
        description="images per evaluation forward (global under torchrun); default: 512 per GPU, 64 per CPU "
        "process, where larger batches outgrow the caches (bench/eval_batch.py: 1.5-2.3x slower per image at 512)",
    )
    seed: int = Field(0, ge=0, lt=2**32, description="seeds the student's weights and the order of the batches")
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto: bf16 on CUDA, else fp32")
    channels_last: bool | None = Field(
        None, description="channels-last memory format; default: on for CUDA and the CPU"
    )
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

    @field_validator("dir", "root")
    @classmethod
    def _names_a_folder(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():  # an output folder "$DIR" with DIR unset: not "the default folder"
            raise ValueError("an empty path names no folder; give a folder (or leave the key out for the default)")
        return value


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
            raise KeyedValueError(
                "schedule.cycle_momentum cycles SGD's momentum; use optim.name sgd or turn it off",
                {"schedule.cycle_momentum": True, "optim.name": self.optim.name},
            )
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


class RefusedYAML(yaml.YAMLError):
    """Valid YAML that kdcli will not take as a configuration: a key twice, or too large once expanded."""


def _line(node_or_mark: Any) -> int:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return int(getattr(mark, "line", -1)) + 1


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key twice in one mapping (plain YAML keeps the later one silently) and a
    document whose anchors and aliases expand past ``MAX_YAML_VALUES`` values or ``MAX_YAML_DEPTH`` levels: the
    composed node graph is measured before anything is built, in time linear in the text."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1  # the composer recurses per level: bound it before Python's recursion limit does
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise RefusedYAML(
                    f"nests deeper than {MAX_YAML_DEPTH} levels (line {_line(self.peek_event())}); "
                    "a configuration nests a few levels: flatten it"
                )
            self._aliases += self.check_event(yaml.AliasEvent)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        self._measure(node)
        return super().construct_document(node)

    def _measure(self, root: yaml.Node) -> None:
        """Values and depth of the document with every alias expanded (memoized per node, so a billion laughs
        costs its text's length to measure), refusing cycles, and keys given twice in one mapping."""
        size: dict[int, int] = {}
        depth: dict[int, int] = {}
        open_nodes: set[int] = set()
        stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
        while stack:
            node, path, done = stack.pop()
            if not done and id(node) in size:
                continue  # an alias of a value measured already
            children = self._children(node, path)
            if done:
                open_nodes.discard(id(node))
                size[id(node)] = 1 + sum(size[id(child)] for child, _ in children)
                depth[id(node)] = 1 + max((depth[id(child)] for child, _ in children), default=0)
                if size[id(node)] > MAX_YAML_VALUES or depth[id(node)] > MAX_YAML_DEPTH:
                    what = (
                        f"more than {MAX_YAML_VALUES:,} values"
                        if size[id(node)] > MAX_YAML_VALUES
                        else f"more than {MAX_YAML_DEPTH} levels deep"
                    )
                    if not self._aliases:
                        raise RefusedYAML(
                            f"holds {what} (line {_line(node)}), far more than a configuration holds; "
                            "pass a kdcli configuration"
                        )
                    raise RefusedYAML(
                        f"expands to {what} through its anchors and aliases (&name, *name: each alias repeats what it "
                        f"names; line {_line(node)}), far more than a configuration holds; write the values out "
                        "without aliases of aliases"
                    )
                continue
            if id(node) in open_nodes:
                raise RefusedYAML(
                    f"an alias at line {_line(node)} refers to a value that contains it, so it never "
                    "ends; remove that alias"
                )
            open_nodes.add(id(node))
            if isinstance(node, yaml.MappingNode):
                self._refuse_duplicate_keys(node, path)
            stack.append((node, path, True))
            stack.extend((child, child_path, False) for child, child_path in children if id(child) not in size)

    @staticmethod
    def _children(node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        if isinstance(node, yaml.SequenceNode):
            return [(child, f"{path}.{index}" if path else str(index)) for index, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            pairs = []
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                pairs += [(key, path), (value, f"{path}.{name}" if path else name)]
            return pairs
        return []

    def _refuse_duplicate_keys(self, node: yaml.MappingNode, path: str) -> None:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base" merges keys that the mapping's own keys may then override
            key = self.construct_object(key_node)
            if key in seen:
                dotted = f"{path}.{key}" if path else str(key)
                second = _line(key_node)
                lines = f"line {second}" if seen[key] == second else f"lines {seen[key]} and {second}"
                raise RefusedYAML(
                    f"key {dotted!r} is given twice ({lines}), and YAML would silently keep the later "
                    "one; keep one of them"
                )
            seen[key] = _line(key_node)


def load_yaml(text: str) -> Any:
    """One YAML document as Python data, read by ``_BoundedLoader`` (``RefusedYAML`` or another ``yaml.YAMLError``
    when it is not one kdcli takes)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A parser's error in one line: what is wrong and where (its first line is often only the context)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        return exc.problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else "")
    return str(exc).splitlines()[0]


def read_yaml(path: Path) -> dict[str, Any]:
    """A configuration file or preset: at most ``MAX_CONFIG_BYTES`` read (so /dev/zero or an endless pipe cannot
    exhaust memory), decoded as UTF-8, parsed by ``load_yaml``."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UsageError(
            f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB, so not a kdcli configuration (a run's "
            "config.yaml is a few KiB); pass a YAML configuration file"
        )
    try:
        data = load_yaml(raw.decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file, so not a YAML configuration; pass a .yaml file") from None
    except RefusedYAML as exc:
        raise UsageError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of configuration sections, not a {type(data).__name__}")
    return data


def load_preset(name_or_path: str, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset by name (``kdcli presets`` lists them) or by YAML path, with its ``base`` chain merged in (``chain``:
    the presets that named this one as their base, so a loop is an error rather than an endless recursion)."""
    if not name_or_path.strip():  # a preset "$P" with P unset: not "no preset"
        raise UsageError(f"{option('preset')} is empty; give a preset name (`kdcli presets` lists them) or a YAML file")
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and _is_file(path)):
        path = presets_dir() / f"{name_or_path}.yaml"
        if not _is_file(path):
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


def preset_own_keys(name_or_path: str) -> dict[str, Any] | None:
    """The keys a preset (shipped, or a YAML file) sets itself, without its base chain and description; None when
    ``name_or_path`` is neither. A sweep arm that names a preset lays these over the sweep's configuration."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and _is_file(path)):
        path = presets_dir() / f"{name_or_path}.yaml"
        if not name_or_path or "/" in name_or_path or not _is_file(path):
            return None
    data = read_yaml(path)
    data.pop("description", None)
    data.pop("base", None)
    return data


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the system refuses to look up (too long, say) instead of an error."""
    try:
        return path.is_file()
    except OSError:
        return False


def resolve(layers: list[Layer]) -> ResolvedConfig:
    """Merge the layers (lowest precedence first), validate, and record where every leaf came from.

    A layer that names another method than the layers below it starts that method from its own defaults: the
    options below were set for the method they named (preset quickstart with method dkd is dkd with dkd's
    defaults, not dkd refusing vanilla's ``kd_weight``)."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, tree in layers:
        method: dict[str, Any] = tree["method"] if isinstance(tree.get("method"), dict) else {}
        before: dict[str, Any] = merged["method"] if isinstance(merged.get("method"), dict) else {}
        if "name" in method and "name" in before and method["name"] != before["name"]:
            merged["method"] = {}
            sources = {k: v for k, v in sources.items() if not k.startswith("method.")}
        merged = deep_merge(merged, tree)
        for key in flatten(tree):
            sources[key] = source
    _refuse_non_finite(merged, "", sources)
    try:
        config = RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise UsageError(_explain(exc, RunConfig, "", sources, layers=[source for source, _ in layers])) from None
    config = _validate_method_options(config, sources)
    # A leaf set by a layer may be a whole section collapsed to one key; record leaves it implies too.
    for key in flatten(dump(config)):
        parent = next((p for p in _prefixes(key) if p in sources), None)
        if key not in sources and parent is not None:
            sources[key] = sources[parent]
    return ResolvedConfig(config, sources)


def data_config(**values: Any) -> DataConfig:
    """A ``DataConfig`` from a command's own arguments (``eval``, ``analyze``): a bad value is a one-line usage error
    that names the option, as ``resolve`` does for a run's configuration."""
    try:
        return DataConfig.model_validate(values)
    except ValidationError as exc:
        sources = {f"data.{key}": option(f"data.{key}") for key in values}  # a bad value names its option
        raise UsageError(_explain(exc, DataConfig, "data.", sources)) from None


def evaluation_settings(batch_size: int | None) -> TrainConfig:
    """The settings a command without a run (``eval``, ``analyze``) evaluates with: ``batch_size`` images a forward
    (None: the device's default), a bad one a one-line usage error that names the option."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UsageError(f"{option('batch_size')} is the images per forward pass, 1 or more, not {batch_size!r}")
    return TrainConfig(eval_batch_size=batch_size)


def _refuse_non_finite(tree: Any, key: str, sources: dict[str, str]) -> None:
    """inf or nan anywhere (a method's or a model's options included, whatever their schema): one line naming the key.
    Strings such as "inf" are left to the schema, whose float fields refuse them too (allow_inf_nan=False)."""
    if isinstance(tree, float) and not math.isfinite(tree):
        raise UsageError(f"invalid value for {key!r}{_origin(key, sources)}: {_NOT_FINITE} (got {tree!r})")
    if isinstance(tree, dict):
        for name, value in tree.items():
            _refuse_non_finite(value, f"{key}.{name}" if key else str(name), sources)
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            _refuse_non_finite(value, f"{key}.{index}", sources)


_NOT_FINITE = "must be a finite number: inf and nan are refused, give an ordinary number"


def _origin(key: str, sources: dict[str, str]) -> str:
    """`` (from LAYER)`` for the layer that set ``key``, the nearest section above it (for a list item), or a key
    below it (a mapping given where a value belongs)."""
    origin = next((sources[k] for k in (key, *_prefixes(key)) if k in sources), None)
    origin = origin or next((source for k, source in sources.items() if k.startswith(f"{key}.")), None)
    return f" (from {origin})" if origin else ""


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
    exc: ValidationError,
    model: type[BaseModel],
    prefix: str,
    sources: dict[str, str],
    fixed: list[str] | None = None,
    layers: list[str] | None = None,
) -> str:
    """One line for the first validation error: the key, what is wrong, the valid choices, and where it came from.
    ``layers``: the layers' names, lowest precedence first (a ``KeyedValueError`` names the latest one's key)."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    keyed = (error.get("ctx") or {}).get("error")
    if isinstance(keyed, KeyedValueError):  # a model validator's: its loc is the section's; the error names the keys
        rank = {name: position for position, name in enumerate(layers or [])}
        section = prefix + "".join(f"{part}." for part in loc)
        blamed = max(keyed.values, key=lambda k: rank.get(sources.get(section + k, ""), -1))
        loc, error = (*loc, *blamed.split(".")), {**error, "input": keyed.values[blamed]}
    key = prefix + ".".join(str(part) for part in loc)
    where = _origin(key, sources)
    if error["type"] == "extra_forbidden":
        valid = (fixed or []) + _section_fields(model, loc)
        hint = did_you_mean(str(loc[-1]), valid, n=1)
        return f"unknown configuration key {key!r}{where}; {hint}valid keys here: {', '.join(valid)}"
    message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
    if error["type"] == "finite_number":
        message = _NOT_FINITE
    return f"invalid value for {key!r}{where}: {message} (got {error.get('input')!r})"
