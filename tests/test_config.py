from pathlib import Path

import pytest

from kdcli.cli.options import parse_set
from kdcli.config import dump, flatten, list_presets, load_preset, resolve
from kdcli.errors import UsageError


def test_precedence_and_sources() -> None:
    resolved = resolve(
        [
            ("default", {}),
            ("preset p", {"train": {"epochs": 10, "batch_size": 32}, "optim": {"lr": 0.2}}),
            ("config c.yaml", {"train": {"epochs": 20}}),
            ("--epochs", {"train": {"epochs": 30}}),
            ("--set train.epochs=40", parse_set("train.epochs=40")),
        ]
    )
    config = resolved.config
    assert (config.train.epochs, config.train.batch_size, config.optim.lr) == (40, 32, 0.2)
    sources = {key: source for key, _, source in resolved.rows()}
    assert sources["train.epochs"] == "--set train.epochs=40"
    assert sources["train.batch_size"] == "preset p"
    assert sources["optim.momentum"] == "default"
    assert sources["method.temperature"] == "default"  # the strategy's own defaults are listed too


def test_unknown_key_names_valid_keys_and_source() -> None:
    with pytest.raises(UsageError) as error:
        resolve([("--set data.nme=x", parse_set("data.nme=x"))])
    message = str(error.value)
    assert "'data.nme'" in message and "did you mean name" in message and "train_subset" in message
    assert "--set data.nme=x" in message


def test_unknown_method_option_names_the_strategy_options() -> None:
    with pytest.raises(UsageError, match=r"method.temprature.*temperature"):
        resolve([("--set", parse_set("method.temprature=2"))])


def test_wrong_type_and_literal_choices() -> None:
    with pytest.raises(UsageError, match=r"train.epochs.*integer"):
        resolve([("--set", parse_set("train.epochs=ten"))])
    with pytest.raises(UsageError, match="'sgd' or 'adamw'"):
        resolve([("--set", parse_set("optim.name=lamb"))])


def test_unknown_method_suggests() -> None:
    with pytest.raises(UsageError, match="did you mean vanilla"):
        resolve([("--method", {"method": {"name": "vanila"}})])


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_parse_set_rejects_malformed(bad: str) -> None:
    with pytest.raises(UsageError, match=r"key\.path=value"):
        parse_set(bad)


def test_parse_set_reads_yaml_values() -> None:
    assert parse_set("schedule.milestones=[1, 2]") == {"schedule": {"milestones": [1, 2]}}
    assert parse_set("data.hflip=false") == {"data": {"hflip": False}}


def test_every_shipped_preset_resolves() -> None:
    names = list_presets()
    assert {"quickstart", "fmnist5k-vanilla", "cifar100-resnet110-resnet20-vanilla"} <= set(names)
    for name in names:
        resolve([(f"preset {name}", load_preset(name))])


def test_dist_preset_is_the_measured_dist_arm() -> None:
    """fmnist5k-dist ships the arm docs/results.md measured (`--preset fmnist5k-vanilla --method dist`), key for key."""
    shipped = resolve([("preset fmnist5k-dist", load_preset("fmnist5k-dist"))]).config
    measured = resolve([("preset fmnist5k-vanilla", load_preset("fmnist5k-vanilla")),
                        ("--method", {"method": {"name": "dist"}})]).config  # fmt: skip
    assert dump(shipped) == dump(measured)
    assert shipped.method_options == {"temperature": 4.0, "ce_weight": 1.0, "beta": 2.0, "gamma": 2.0}


RECIPES = Path(__file__).resolve().parents[1] / "bench" / "recipes"
RECIPE_SETTINGS: dict[str, dict[str, object]] = {  # what docs/results.md measured for each bench/recipes arm
    "ls.yaml": {"method.logit_standardization": True, "method.temperature": 4.0, "method.kd_weight": 0.9},
    "ls-paper.yaml": {"method.logit_standardization": True, "method.temperature": 2.0, "method.kd_weight": 9.0},
    "consistent-labels.yaml": {"data.mixup": 1.0, "data.cutmix": 0.0, "method.ce_weight": 0.1},
    "cutmix-labels.yaml": {"data.cutmix": 1.0, "data.mixup": 0.0, "method.ce_weight": 0.1},
}


@pytest.mark.parametrize(("recipe", "expected"), RECIPE_SETTINGS.items())
def test_bench_recipes_resolve_to_the_measured_arms(recipe: str, expected: dict[str, object]) -> None:
    """Each bench/recipes arm still resolves on the FMNIST-5k preset to the settings docs/results.md measured."""
    resolved = resolve([("preset fmnist5k-vanilla", load_preset("fmnist5k-vanilla")),
                        (f"arm {recipe}", load_preset(str(RECIPES / recipe)))])  # fmt: skip
    tree = flatten(dump(resolved.config))
    assert resolved.config.method.name == "vanilla"
    assert {key: tree[key] for key in expected} == expected


def test_every_bench_recipe_is_covered() -> None:
    assert sorted(path.name for path in RECIPES.glob("*.yaml")) == sorted(RECIPE_SETTINGS)


def test_preset_base_is_merged_first() -> None:
    preset = load_preset("cifar100-resnet32x4-resnet8x4-vanilla")
    assert preset["schedule"]["milestones"] == [150, 180, 210]
    assert preset["teacher"]["arch"] == "resnet32x4"


def test_unknown_preset_suggests() -> None:
    with pytest.raises(UsageError, match="did you mean quickstart"):
        load_preset("quickstrat")


def test_a_layer_naming_another_method_starts_it_from_its_defaults() -> None:
    """`--preset quickstart --method dkd`: the preset's vanilla options (kd_weight) are not dkd's; dkd gets its own
    defaults instead of an 'unknown key' refusal, and options given with or after the new name still count."""
    preset = load_preset("quickstart")
    resolved = resolve([("preset quickstart", preset), ("--method", {"method": {"name": "dkd"}}),
                        ("--set", {"method": {"beta": 2.0}})])  # fmt: skip
    options = resolved.config.method_options
    assert resolved.config.method.name == "dkd" and options["beta"] == 2.0 and "kd_weight" not in options
    assert resolved.sources["method.beta"] == "--set" and "method.alpha" not in resolved.sources  # a default
    same = resolve([("preset quickstart", preset), ("--method", {"method": {"name": "vanilla"}})]).config
    assert same.method_options["kd_weight"] == 0.9  # the same method keeps the preset's options


def test_mixing_options_are_checked() -> None:
    with pytest.raises(UsageError) as refused:  # named by the key and the layer that set it, not by the section
        resolve([("preset quickstart", {"data": {"name": "embedded"}}), ("--set", parse_set("data.mix_prob=0.5"))])
    assert str(refused.value) == (
        "invalid value for 'data.mix_prob' (from --set): data.mix_prob is the chance that a batch is mixed, and "
        "nothing mixes: set data.mixup or data.cutmix (an α such as 0.2 or 1.0) too (got 0.5)"
    )
    with pytest.raises(UsageError, match=r"data.mixup.*greater than or equal to 0"):
        resolve([("--mixup", {"data": {"mixup": -0.2}})])
    mixed = resolve([("--set", parse_set("data.mix_prob=0.5")), ("--cutmix", {"data": {"cutmix": 1.0}})]).config
    assert (mixed.data.mixup, mixed.data.cutmix, mixed.data.mix_prob) == (0.0, 1.0, 0.5)
