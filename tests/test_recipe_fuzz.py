"""Fault injection on the shipped recipes: a mutated recipe either runs or fails with a one-line DiffusekitError.

Every shipped method's recipe is first shrunk to something that trains and samples in a
blink, then mutated through its plain-data form (keys deleted, values replaced by values
of other types, zero, negative, huge, NaN, inf, empty, unknown or swapped component
names, other shapes and class counts, ...) and run through the public path:
``build`` → ``train`` → ``sample``. Any exception that is not a
:class:`~diffusekit.DiffusekitError` with a one-line message fails the test.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import attrs
import diffusekit
import pytest
import torch
from diffusekit import ClassLabel, ConfigError, DiffusekitError, ShapeError
from diffusekit.recipe import recipe_to_dict
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

METHODS = ("gaussian:digits", "masked:sudoku", "masked:text")

# a short text part: the test corpus (conftest.py) holds a few thousand characters
TEXT_LENGTH = 16


def tiny(method: str) -> dict[str, Any]:
    """The shipped recipe of ``method`` as plain data, shrunk to train and sample in milliseconds."""
    data = recipe_to_dict(diffusekit.get_registry().resolve("method", method).obj().recipe())
    data["train"].update(batch_size=4, warmup_steps=0, steps=1)
    data["sample"] = {"num": 2, "batch_size": 2}
    data["grid"]["steps"] = 2
    network = data["network"]
    if network["name"] == "gaussian:unet":
        network.update(channels=8, channel_mult=[1, 2], num_res_blocks=1)
    else:
        network.update(d_model=16, layers=1, heads=2)
    if method == "masked:sudoku":
        data["dataset"]["count"] = 4
    if method == "masked:text":
        data["parts"]["x"]["shape"] = [TEXT_LENGTH]
        network["length"] = TEXT_LENGTH
        data["dataset"]["length"] = TEXT_LENGTH
    return data


def run(data: dict[str, Any]) -> None:
    """The public path: build, one training step (no checkpoint), two samples."""
    pipeline = diffusekit.build(data)
    diffusekit.train(pipeline, steps=1, progress=False)
    pipeline.sample(2)


def expect_clean(data: dict[str, Any]) -> DiffusekitError | None:
    """Run ``data``; return the DiffusekitError it raised (if any), checking its message is one non-empty line."""
    try:
        run(data)
    except DiffusekitError as exc:
        message = str(exc)
        assert message.strip(), f"{type(exc).__name__} with an empty message"
        assert "\n" not in message.strip(), f"{type(exc).__name__} message spans lines: {message!r}"
        return exc
    return None


# --- mutations ------------------------------------------------------------------------------

REGISTRY = diffusekit.get_registry()
UNKNOWN = ["nope:nothing", "nothing"]
ALL_NAMES = sorted({entry.qualname for entry in REGISTRY.entries()}) + UNKNOWN
COMPONENT_KINDS = ("schedule", "parameterization", "network", "sampler", "grid", "guidance", "dataset")

HUGE_INTS = [2**63, 10**20, -(2**63) - 1]  # beyond any tensor size or seed (64 bits)
FLOATS = [0.0, -1.0, 0.5, 1.5, 1e-300, 1e300, -1e300, math.nan, math.inf, -math.inf]
INTS = [0, 1, 2, 3, 5, 7, 9, 11, 16, -1, -7, *HUGE_INTS]
STRINGS = ["", "x", "ten", "uniform", "logit_normal", "rotary", "sudoku", "learned", "margin", "bh1"]


def names(kind: str | None) -> st.SearchStrategy[str]:
    """Registered names of ``kind`` (any kind when None) or unknown ones."""
    same = sorted(entry.qualname for entry in REGISTRY.entries(kind)) if kind else []
    return st.sampled_from(same + UNKNOWN) if same else st.sampled_from(ALL_NAMES)


def scalars() -> st.SearchStrategy[Any]:
    """Values of every type a recipe might hold, with the awkward ones overrepresented."""
    return st.one_of(
        st.sampled_from(INTS),
        st.sampled_from(FLOATS),
        st.booleans(),
        st.sampled_from(STRINGS),
        st.sampled_from(ALL_NAMES),
        st.none(),
        st.integers(-3, 20),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def values() -> st.SearchStrategy[Any]:
    """Scalars, lists and tables (component tables included)."""
    return st.one_of(
        scalars(),
        st.lists(st.integers(-2, 12), max_size=4),
        st.lists(scalars(), max_size=3),
        st.just({}),
        st.builds(lambda name: {"name": name}, st.sampled_from(ALL_NAMES)),
        st.dictionaries(st.sampled_from(["name", "steps", "num_classes", "x", "y"]), scalars(), max_size=2),
    )


Path = tuple[Any, ...]


def paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every key path into the plain-data recipe ``node`` (tables and lists included)."""
    out: list[Path] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


def get(data: Any, path: Path) -> Any:
    for key in path:
        data = data[key]
    return data


def put(data: Any, path: Path, value: Any) -> None:
    get(data, path[:-1])[path[-1]] = value


def component_kind(path: Path) -> str | None:
    return path[-1] if path and path[-1] in COMPONENT_KINDS else None


# each mutation kind applies itself to the recipe in place and says what it did; the
# value-level ones are listed twice: they keep the recipe well-formed more often, so
# more runs get past the parameter checks to building, training and sampling
MUTATIONS = [
    "delete",
    "replace",
    "swap_component",
    "swap_component",
    "rename_component",
    "add_key",
    "number",
    "number",
    "sizes",
    "sizes",
    "shape",
    "parts",
    "guidance",
    "parameter",
    "parameter",
    "parameter",
]


def parameters(path: Path, table: dict[str, Any]) -> list[str]:
    """The parameters of the registered component a recipe table names (none if the name is unknown)."""
    kind = component_kind(path)
    try:
        cls = REGISTRY.resolve(kind, table["name"]).obj if kind else None
    except (DiffusekitError, TypeError):
        return []
    return [field.name for field in attrs.fields(cls) if field.init] if cls is not None else []


def parameter_values(default: Any) -> st.SearchStrategy[Any]:
    """Values for a component parameter: near its default, extreme, or of another type."""
    near: list[st.SearchStrategy[Any]] = []
    if type(default) is int:
        near = [st.integers(default - 3, default + 3), st.just(-default)]
    elif type(default) is float:
        near = [st.floats(-2 * abs(default) - 1, 2 * abs(default) + 1), st.just(default * 1e6)]
    elif isinstance(default, tuple):
        near = [st.lists(st.integers(-1, 4) if not default or type(default[0]) is int else st.floats(-1, 100))]
    return st.one_of(*near, st.sampled_from(FLOATS + INTS), values())


def mutate(draw: Any, data: dict[str, Any]) -> str:
    """Apply one drawn mutation to ``data`` in place; return what it did (for the failure report)."""
    kind = draw(st.sampled_from(MUTATIONS))
    every = paths(data)
    tables = [p for p in every if isinstance(get(data, p), dict) and "name" in get(data, p)]
    numbers = [p for p in every if type(get(data, p)) in (int, float)]
    if kind == "delete" and every:
        path = draw(st.sampled_from(every))
        del get(data, path[:-1])[path[-1]]
        return f"delete {path}"
    if kind == "replace" and every:
        path, value = draw(st.sampled_from(every)), draw(values())
        put(data, path, value)
        return f"{path} = {value!r}"
    if kind in ("swap_component", "rename_component") and tables:  # another component, mostly of the same kind
        path = draw(st.sampled_from(tables))
        name = draw(st.one_of(names(component_kind(path)), st.sampled_from(ALL_NAMES)))
        if kind == "swap_component":  # with its default parameters
            put(data, path, {"name": name})
        else:  # keeping the old one's parameters
            get(data, path)["name"] = name
        return f"{path} -> {name!r} ({kind})"
    if kind == "parameter":  # any parameter of a component, set or not in the recipe
        choices = [(p, name) for p in tables for name in parameters(p, get(data, p))]
        if choices:
            path, name = draw(st.sampled_from(choices))
            cls = REGISTRY.resolve(component_kind(path), get(data, path)["name"]).obj
            default = attrs.fields_dict(cls)[name].default
            value = draw(parameter_values(default if not isinstance(default, attrs.Factory) else None))
            get(data, path)[name] = value
            return f"{path}.{name} = {value!r}"
    if kind == "add_key":
        path = draw(st.sampled_from([()] + [p for p in every if isinstance(get(data, p), dict)]))
        key = draw(st.sampled_from(["extra", "steps", "num_classes", "name", "shape", "y", "scale", "eta"]))
        value = draw(values())
        get(data, path)[key] = value
        return f"{path}[{key!r}] = {value!r}"
    if kind == "number" and numbers:  # a nearby or an extreme value of a number already there
        path = draw(st.sampled_from(numbers))
        old = get(data, path)
        if isinstance(old, int):
            # not near a huge one: sizes that merely exhaust memory or time are settings, not errors
            nearby = st.integers(old - 3, old + 3) if abs(old) < 2**31 else st.nothing()
            new: Any = draw(st.one_of(nearby, st.sampled_from([0, -old, *HUGE_INTS])))
        else:
            new = draw(st.one_of(st.sampled_from(FLOATS), st.floats(-2.0, 2.0), st.just(old * 1e6)))
        put(data, path, new)
        return f"{path} = {new!r}"
    if kind == "sizes":  # class counts, lengths, channels, steps, ... of any component
        keys = ("num_classes", "num_labels", "length", "in_channels", "dim", "count", "steps", "heads", "stride")
        candidates = [p for p in every if p[-1] in keys]
        if candidates:
            path, new = draw(st.sampled_from(candidates)), draw(st.integers(0, 12))
            put(data, path, new)
            return f"{path} = {new}"
    parts = data.get("parts")
    if kind == "shape" and isinstance(parts, dict) and parts and isinstance(parts.get(name := min(parts)), dict):
        shape = draw(st.lists(st.integers(0, 20), max_size=4))
        parts[name]["shape"] = shape
        return f"parts.{name}.shape = {shape}"
    if kind == "parts" and isinstance(parts, dict) and parts:  # renamed, or a second part
        name = min(parts)
        if draw(st.booleans()):
            data["parts"] = {"y": parts[name]}
            return f"parts.{name} renamed y"
        parts["y"] = copy.deepcopy(parts[name])
        return f"parts.y = copy of parts.{name}"
    if kind == "guidance":
        table = {"name": draw(names("guidance"))}
        if draw(st.booleans()):
            table[draw(st.sampled_from(["scale", "weight", "weights", "rescale", "interval"]))] = draw(values())
        data["guidance"] = table
        return f"guidance = {table!r}"
    data["parts"] = {}  # nothing of the drawn kind to mutate
    return "parts = {}"


@pytest.mark.parametrize("method", METHODS)
def test_the_tiny_recipes_run(method):
    """The starting points of the fuzzer are valid: they build, train and sample."""
    assert expect_clean(tiny(method)) is None


@pytest.mark.parametrize("method", METHODS)
# most mutations stop at a parameter check in a millisecond; the few that train and sample set the pace
@settings(max_examples=max(150, settings().max_examples), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_recipe_runs_or_fails_with_a_one_line_diffusekit_error(method, data):
    recipe = tiny(method)
    for _ in range(data.draw(st.sampled_from([1, 1, 2, 3]), label="mutations")):
        note(mutate(data.draw, recipe))
    exc = expect_clean(recipe)
    event("ran" if exc is None else type(exc).__name__)  # the split shows with --hypothesis-show-statistics


# --- regressions of what the fuzzer found ------------------------------------------------------------


def error_of(data: dict[str, Any]) -> DiffusekitError:
    exc = expect_clean(data)
    assert exc is not None, "the recipe ran"
    return exc


def test_a_recipe_without_parts_is_refused():
    data = tiny("gaussian:digits")
    data["parts"] = {}  # was KeyError: 'x'
    exc = error_of(data)
    assert isinstance(exc, ConfigError) and exc.path == "parts"


def test_a_zero_channel_multiplier_is_refused():
    data = tiny("gaussian:digits")
    data["network"]["channel_mult"] = [0]  # was ZeroDivisionError
    exc = error_of(data)
    assert isinstance(exc, ConfigError) and exc.path.startswith("network")
    assert "channel_mult" in str(exc) and "0" in exc.reason


@pytest.mark.parametrize("method", ["masked:sudoku", "masked:text"])
def test_fewer_token_classes_than_the_data_holds_are_refused(method):
    data = tiny(method)
    data["network"]["num_classes"] = data["parts"]["x"]["schedule"]["num_classes"] = 5  # was IndexError
    exc = error_of(data)
    assert isinstance(exc, ShapeError) and "num_classes = 5" in str(exc)


def test_fewer_network_classes_than_the_labels_are_refused():
    data = tiny("gaussian:digits")
    data["network"]["num_classes"] = 4  # the digits have 10 labels; was IndexError
    exc = error_of(data)
    assert isinstance(exc, ShapeError) and "4 classes" in str(exc) and "num_classes = 10" in str(exc)


def test_a_network_refuses_class_labels_of_another_number_of_classes():
    """Otherwise the null label (index num_classes) would silently land on a real class."""
    data = tiny("gaussian:digits")
    data["network"]["num_classes"] = 12
    pipeline = diffusekit.build(data)
    labels = ClassLabel(torch.tensor([0, ClassLabel.NULL]), num_classes=10)
    with pytest.raises(ShapeError, match=r"embeds 12 classes.*num_classes = 10"):
        pipeline.sample(2, condition=labels)


# (method, {path: value}, error type, what the message names); each was a raw exception before
FOUND = [
    ("gaussian:digits", {("network", "in_channels"): 3}, ConfigError, "in_channels is 3"),
    ("gaussian:digits", {("network", "channels"): 12}, ConfigError, "multiple of 8: 12"),
    ("gaussian:digits", {("parts", "x", "shape"): [1, 7, 7]}, ConfigError, "parts.x.shape"),
    ("gaussian:digits", {("parts", "x", "parameterization"): {"name": "masked:subs"}}, ConfigError, "categorical"),
    ("gaussian:digits", {("grid", "rho"): 1e-18}, ConfigError, "grid.rho"),
    ("gaussian:digits", {("train", "lr"): 1e300}, ConfigError, "train.lr"),
    ("gaussian:digits", {("train", "batch_size"): 2**63}, ConfigError, "train.batch_size"),
    ("masked:sudoku", {("parts", "x", "schedule"): {"name": "gaussian:ve"}}, ConfigError, "gaussian:ve"),
    ("masked:sudoku", {("network", "num_classes"): 12}, ConfigError, "network.num_classes: is 12"),
    ("masked:sudoku", {("network", "layers"): 2**63}, ConfigError, "network.layers"),
    ("masked:sudoku", {("guidance",): {"name": "gaussian:product", "weight": 0.5}}, ConfigError, "guidance"),
    ("masked:text", {("sampler",): {"name": "gaussian:heun"}}, ConfigError, "sampler"),
    ("masked:text", {("grid",): {"name": "gaussian:karras"}}, ConfigError, "grid"),
    (
        "masked:text",
        {("parts", "x", "shape"): [10**6], ("network", "length"): 10**6, ("dataset", "length"): 10**6},
        ConfigError,
        "dataset.length",
    ),
]


@pytest.mark.parametrize(("method", "edits", "error", "names"), FOUND)
def test_what_the_fuzzer_found_fails_cleanly(method, edits, error, names):
    data = tiny(method)
    for path, value in edits.items():
        put(data, path, value)
    exc = error_of(data)
    assert isinstance(exc, error) and names in str(exc)
