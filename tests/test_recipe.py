"""Recipes: exact round trips (Hypothesis) and errors that name the offending path."""

import json

import attrs
import pytest
from diffusekit import ConfigError, get_registry
from diffusekit.recipe import (
    ComponentSpec,
    apply_overrides,
    dumps_json,
    dumps_toml,
    instantiate,
    load_recipe,
    loads_json,
    loads_toml,
    parse_value,
    recipe_from_dict,
    recipe_to_dict,
    spec_of,
    validate,
)
from diffusekit.testing.strategies import recipes
from diffusekit_gaussian import DDIM, KarrasGrid, VPCosine
from hypothesis import given

VALID = """
seed = 3
[parts.x]
shape = [2]
schedule = {name = "gaussian:vp_cosine"}
parameterization = "gaussian:eps"
[network]
name = "gaussian:mlp"
dim = 2
[sampler]
name = "gaussian:ddim"
eta = 0.5
[grid]
name = "karras"
steps = 10
[train]
steps = 5
"""


@given(recipes())
def test_toml_round_trip_is_exact(recipe):
    assert loads_toml(dumps_toml(recipe)) == recipe


@given(recipes())
def test_json_round_trip_is_exact(recipe):
    assert loads_json(dumps_json(recipe)) == recipe


def test_a_valid_recipe_builds_the_named_components():
    recipe = loads_toml(VALID)
    registry = get_registry()
    validate(recipe, registry)
    assert instantiate(registry, "sampler", recipe.sampler, "sampler") == DDIM(eta=0.5)
    assert instantiate(registry, "grid", recipe.grid, "grid") == KarrasGrid(steps=10)
    assert recipe.parts["x"].parameterization == ComponentSpec("gaussian:eps")


@pytest.mark.parametrize(
    "edit, path, message",
    [
        ({"grid": {"name": "karras", "steps": "ten"}}, "grid.steps", "expected int, got 'ten'"),
        ({"grid": {"name": "karras", "steps": 2.5}}, "grid.steps", "expected int, got 2.5"),
        ({"grid": {"name": "karras", "steps": True}}, "grid.steps", "expected int, got True"),
        ({"grid": {"name": "karras", "stepz": 3}}, "grid.stepz", "unknown parameter of gaussian:karras"),
        ({"sampler": {"name": "gaussian:nope"}}, "sampler.name", "unknown sampler 'gaussian:nope'"),
        ({"sampler": {"name": 5}}, "sampler", "'name' key"),
        ({"train": {"steps": "many"}}, "train.steps", "expected int"),
        ({"train": {"stepz": 1}}, "train.stepz", "unknown key"),
        ({"colour": "blue"}, "colour", "unknown key"),
        (
            {"parts": {"x": {"shape": [2], "schedule": "gaussian:vp_cosine", "parameterization": "gaussian:epz"}}},
            "parts.x.parameterization.name",
            "unknown parameterization",
        ),
        (
            {"parts": {"x": {"shape": ["a"], "schedule": "gaussian:vp_cosine", "parameterization": "gaussian:eps"}}},
            "parts.x.shape[0]",
            "expected int",
        ),
        (
            {"parts": {"x": {"schedule": "gaussian:vp_cosine", "parameterization": "gaussian:eps"}}},
            "parts.x.shape",
            "missing",
        ),
        ({"train": {"time_distribution": "gamma"}}, "train.time_distribution", ""),
        ({"sampler": {"name": "gaussian:ddim", "eta": 3.0}}, "sampler", "invalid parameters for gaussian:ddim"),
        ({"sample": {"num": 0}}, "sample.num", "at least 1"),
    ],
)
def test_errors_name_the_offending_path(edit, path, message):
    import tomllib

    data = tomllib.loads(VALID)
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in ("parts",):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(ConfigError) as err:
        validate(recipe_from_dict(data), get_registry())
    text = str(err.value)
    assert text.startswith(f"{path}:"), text
    assert message in text
    assert "\n" not in text


def test_malformed_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.toml")
    (tmp_path / "r.yaml").write_text("x: 1")
    with pytest.raises(ConfigError, match=".toml or .json"):
        load_recipe(tmp_path / "r.yaml")
    (tmp_path / "r.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="a recipe is a table"):
        load_recipe(tmp_path / "r.json")


def test_overrides_set_values_and_replace_components():
    recipe = loads_toml(VALID)
    changed = apply_overrides(recipe, {"sampler": "gaussian:heun", "grid.steps": 4, "train.lr": 0.01, "seed": 9})
    assert changed.sampler == ComponentSpec("gaussian:heun")  # the old sampler's eta is gone
    assert changed.grid.params["steps"] == 4 and changed.train.lr == 0.01 and changed.seed == 9
    assert apply_overrides(recipe, {"guidance.name": "gaussian:cfg", "guidance.scale": 3.0}).guidance == ComponentSpec(
        "gaussian:cfg", {"scale": 3.0}
    )
    with pytest.raises(ConfigError, match="^seed: is a value"):
        apply_overrides(recipe, {"seed.x.y": 1})
    assert (parse_value("10"), parse_value("0.5"), parse_value("true"), parse_value("[1, 2]")) == (
        10,
        0.5,
        True,
        [1, 2],
    )
    assert parse_value("gaussian:heun") == "gaussian:heun"


def test_components_round_trip_through_their_spec():
    registry = get_registry()
    for component in (VPCosine(s=0.01, logsnr_min=-12.0), KarrasGrid(steps=7, rho=5.0), DDIM(eta=0.3)):
        spec = spec_of(registry, component)
        assert instantiate(registry, registry.name_of(component).kind, spec, "x") == component
    spec = spec_of(registry, VPCosine())
    assert "tau_max" not in spec.params  # derived fields are not parameters


def test_none_entries_are_left_out_of_toml():
    recipe = attrs.evolve(loads_toml(VALID), guidance=None, dataset=None)
    assert "guidance" not in recipe_to_dict(recipe)
    assert loads_toml(dumps_toml(recipe)) == recipe


def test_finetune_stages_inherit_what_they_do_not_set():
    text = VALID + '[[finetune]]\nsteps = 3\nlr_schedule = "cosine"\n[[finetune]]\nlr = 1e-5\n'
    recipe = loads_toml(text)
    first, second = recipe.finetune
    assert (first.steps, first.lr_schedule, first.lr) == (3, "cosine", recipe.train.lr)
    assert (second.steps, second.lr_schedule, second.lr) == (3, "cosine", 1e-5)
    # written back, each stage holds only what it changes from the stage before
    assert recipe_to_dict(recipe)["finetune"] == [{"steps": 3, "lr_schedule": "cosine"}, {"lr": 1e-5}]
    assert loads_toml(dumps_toml(recipe)) == recipe
    # an override of the first stage's setting reaches the stages that inherit it
    assert [s.batch_size for s in apply_overrides(recipe, {"train.batch_size": 7}).finetune] == [7, 7]
    assert apply_overrides(recipe, {"finetune.1.steps": 9}).finetune[1].steps == 9
    with pytest.raises(ConfigError, match=r"^finetune.2: finetune has 2 entries: index them 0 to 1"):
        apply_overrides(recipe, {"finetune.2.steps": 9})
    with pytest.raises(ConfigError, match=r"^finetune\[1\].lr_min: must lie in \[0, finetune\[1\].lr = 1e-05\]"):
        validate(apply_overrides(recipe, {"finetune.1.lr_min": 0.1}), get_registry())
    with pytest.raises(ConfigError, match=r"^finetune\[0\].stepz: unknown key"):
        loads_toml(VALID + "[[finetune]]\nstepz = 3\n")
    assert "finetune" not in recipe_to_dict(loads_toml(VALID))  # a one-stage recipe reads as before


def test_a_stage_seed_equal_to_the_recipes_reads_as_none_and_round_trips():
    """A stage's ``seed`` is its own draws' seed; the recipe's seed spelt out is none (one
    spelling), which is how a later stage goes back to it in TOML."""
    text = VALID + "seed = 9\n[[finetune]]\nlr = 1e-4\n[[finetune]]\nseed = 3\n"
    recipe = loads_toml(text)  # VALID's recipe has seed 3
    assert [cfg.seed for cfg in recipe.train_stages] == [9, 9, None]
    assert recipe_to_dict(recipe)["finetune"] == [{"lr": 1e-4}, {"seed": 3}]
    assert loads_toml(dumps_toml(recipe)) == recipe and loads_json(dumps_json(recipe)) == recipe
    # the recipe's seed becomes the stages' own: they draw with it, spelt none
    assert [cfg.seed for cfg in attrs.evolve(recipe, seed=9).train_stages] == [None, None, None]


def test_a_later_stage_can_go_back_to_the_default_objective():
    """TOML has no null: a stage drops the stage before's objective by naming the default one."""
    text = VALID + 'objective = {name = "x:distil", k = 2}\n[[finetune]]\nobjective = "core:denoising"\n'
    recipe = loads_toml(text)
    assert recipe.train.objective == ComponentSpec("x:distil", {"k": 2}) and recipe.finetune[0].objective is None
    assert recipe_to_dict(recipe)["finetune"] == [{"objective": {"name": "core:denoising"}}]
    for built in (recipe, attrs.evolve(recipe, finetune=[attrs.evolve(recipe.train, objective=None, lr=1e-5)])):
        assert loads_toml(dumps_toml(built)) == built and loads_json(dumps_json(built)) == built
    # the default spelt out is the default: recipes that differ only in that are equal
    assert attrs.evolve(recipe.train, objective=ComponentSpec("denoising")) == attrs.evolve(
        recipe.train, objective=None
    )
