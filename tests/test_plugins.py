"""Plugin discovery, registration, failure isolation and name resolution (in process)."""

import importlib.metadata as md
import sys
import types

import attrs
import pytest
from diffusekit import AmbiguousComponent, ComponentNotFound, Sampler, TimeGrid, hookimpl
from diffusekit.builtins import UniformGrid
from diffusekit.plugins import load
from diffusekit.registry import snake_case


@attrs.frozen
class StepGrid(UniformGrid):
    """A grid for tests."""


@attrs.frozen
class OtherGrid(UniformGrid):
    """Another grid for tests."""


def _module(monkeypatch, name, **hooks):
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    monkeypatch.setitem(sys.modules, name, module)
    return md.EntryPoint(name.split("_", 1)[1], name, "diffusekit")


def _grids(*pairs):
    def register_grids(register):
        for cls, name in pairs:
            register(cls, name=name)

    return register_grids


def test_components_get_qualified_names_and_bare_names_resolve(monkeypatch):
    ep = _module(monkeypatch, "fake_alpha", register_grids=_grids((StepGrid, "step")))
    state = load([ep])
    assert state.registry.resolve("grid", "alpha:step").obj is StepGrid
    assert state.registry.resolve("grid", "step").obj is StepGrid
    assert state.plugins["alpha"].components == {"grid": ["alpha:step"]}
    assert state.plugins["alpha"].hooks == ["register_grids"]
    assert state.plugins["core"].builtin and "core:uniform" in state.plugins["core"].components["grid"]


def test_ambiguous_and_unknown_names_list_candidates(monkeypatch):
    a = _module(monkeypatch, "fake_alpha", register_grids=_grids((StepGrid, "step")))
    b = _module(monkeypatch, "fake_beta", register_grids=_grids((OtherGrid, "step")))
    registry = load([a, b]).registry
    with pytest.raises(AmbiguousComponent, match="alpha:step, beta:step"):
        registry.resolve("grid", "step")
    assert registry.resolve("grid", "beta:step").obj is OtherGrid
    with pytest.raises(ComponentNotFound, match=r"did you mean .*step") as err:
        registry.resolve("grid", "stepp")
    assert "core:uniform" in str(err.value)
    with pytest.raises(ComponentNotFound, match="unknown component kind"):
        registry.resolve("gird", "step")


def test_a_component_under_two_names_has_one_canonical_name_and_aliases(monkeypatch):
    """A component that moved plugins stays registered under its old name: both names build it,
    its bare name is not ambiguous, and it is saved under the name of the plugin loaded first."""
    new = _module(monkeypatch, "fake_alpha", register_grids=_grids((StepGrid, "step")))
    old = _module(monkeypatch, "fake_beta", register_grids=_grids((StepGrid, "step"), (OtherGrid, "other")))
    registry = load([old, new]).registry  # plugins load in name order, whatever the discovery order
    assert registry.resolve("grid", "beta:step").obj is registry.resolve("grid", "alpha:step").obj is StepGrid
    assert registry.resolve("grid", "step").qualname == "alpha:step"
    assert registry.name_of(StepGrid()).qualname == "alpha:step"
    assert registry.canonical(registry.resolve("grid", "beta:step")).qualname == "alpha:step"
    assert registry.canonical(registry.resolve("grid", "other")).qualname == "beta:other"


def test_a_plugin_that_fails_to_import_is_reported_and_others_load(monkeypatch):
    good = _module(monkeypatch, "fake_alpha", register_grids=_grids((StepGrid, "step")))
    broken = md.EntryPoint("broken", "fake_module_that_does_not_exist", "diffusekit")
    state = load([good, broken])
    assert "failed to load" in state.plugins["broken"].error
    assert "ModuleNotFoundError" in state.plugins["broken"].error
    assert state.registry.resolve("grid", "alpha:step").obj is StepGrid


def test_a_plugin_whose_registration_raises_keeps_none_of_its_components(monkeypatch):
    def register_grids(register):
        register(StepGrid, name="fine")
        raise RuntimeError("boom")

    bad = _module(monkeypatch, "fake_bad", register_grids=register_grids)
    good = _module(monkeypatch, "fake_alpha", register_grids=_grids((OtherGrid, "other")))
    state = load([bad, good])
    line = register_grids.__code__.co_firstlineno + 2  # the raise, named so the author finds it
    assert state.plugins["bad"].error == f"failed to register: RuntimeError: boom ({__file__}:{line})"
    assert state.plugins["bad"].components == {}
    with pytest.raises(ComponentNotFound):
        state.registry.resolve("grid", "bad:fine")
    assert state.registry.resolve("grid", "other").obj is OtherGrid


def test_registering_the_wrong_kind_or_a_duplicate_is_an_error(monkeypatch):
    wrong = _module(monkeypatch, "fake_wrong", register_samplers=_grids((StepGrid, "step")))
    twice = _module(monkeypatch, "fake_twice", register_grids=_grids((StepGrid, "step"), (OtherGrid, "step")))
    state = load([wrong, twice])
    assert "not a subclass of diffusekit.Sampler" in state.plugins["wrong"].error
    assert "registered twice" in state.plugins["twice"].error and "StepGrid" in state.plugins["twice"].error


def test_two_modules_claiming_one_plugin_name_load_neither(monkeypatch):
    first = _module(monkeypatch, "fake_same", register_grids=_grids((StepGrid, "step")))
    _module(monkeypatch, "fake_other", register_grids=_grids((OtherGrid, "step")))
    second = md.EntryPoint("same", "fake_other", "diffusekit")
    state = load([first, second])
    claimants = [info for info in state.plugins.values() if info.name == "same"]
    assert len(claimants) == 2
    assert all("fake_same" in i.error and "fake_other" in i.error for i in claimants)
    with pytest.raises(ComponentNotFound):
        state.registry.resolve("grid", "same:step")


def test_the_same_distribution_seen_twice_loads_once(monkeypatch):
    ep = _module(monkeypatch, "fake_same", register_grids=_grids((StepGrid, "step")))
    state = load([ep, md.EntryPoint(ep.name, ep.value, ep.group)])
    assert state.plugins["same"].error is None
    assert state.registry.resolve("grid", "same:step").obj is StepGrid


def test_core_is_a_reserved_plugin_name(monkeypatch):
    ep = _module(monkeypatch, "fake_core", register_grids=_grids((StepGrid, "step")))
    state = load([ep])
    assert "reserved" in state.plugins["core (fake_core)"].error
    assert state.plugins["core"].builtin and state.plugins["core"].error is None


def test_environment_variable_restricts_loading(monkeypatch):
    a = _module(monkeypatch, "fake_alpha", register_grids=_grids((StepGrid, "step")))
    b = _module(monkeypatch, "fake_beta", register_grids=_grids((OtherGrid, "other")))
    assert set(load([a, b], env="beta").plugins) == {"core", "beta"}
    assert set(load([a, b], env="").plugins) == {"core"}
    assert set(load([a, b], env=None).plugins) == {"core", "alpha", "beta"}


def test_default_names_are_snake_case():
    assert snake_case("KarrasGrid") == "karras_grid"
    assert snake_case("EDMPreconditioning") == "edm_preconditioning"
    assert issubclass(UniformGrid, TimeGrid) and not issubclass(UniformGrid, Sampler)


def _exit(code):
    def hook(register):
        raise SystemExit(code)

    return hook


def _interrupt(register):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("hook", "message"), [(_exit(3), "called sys.exit(3)"), (_interrupt, "KeyboardInterrupt")], ids=["exit", "ctrl-c"]
)
def test_a_plugin_that_exits_or_interrupts_in_a_hook_is_reported_not_fatal(monkeypatch, hook, message):
    bad = _module(monkeypatch, "fake_quitter", register_grids=hook)
    good = _module(monkeypatch, "fake_alpha", register_grids=_grids((OtherGrid, "other")))
    state = load([bad, good])
    assert state.plugins["quitter"].error.startswith(f"failed to register: {message}")
    assert __file__ in state.plugins["quitter"].error
    assert state.registry.resolve("grid", "alpha:other").obj is OtherGrid


def test_a_plugin_that_exits_at_import_is_reported_not_fatal(monkeypatch, tmp_path):
    (tmp_path / "fake_exits_at_import.py").write_text("import sys\nsys.exit('bye')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    state = load([md.EntryPoint("exiter", "fake_exits_at_import", "diffusekit")])
    assert state.plugins["exiter"].error.startswith("failed to load: called sys.exit('bye')")
    assert "fake_exits_at_import.py:2" in state.plugins["exiter"].error


def test_unknown_names_in_the_environment_variable_are_reported(monkeypatch):
    good = _module(monkeypatch, "fake_alpha", register_grids=_grids((OtherGrid, "other")))
    state = load([good], env="alpha, nosuch")
    assert state.warnings == [
        "DIFFUSEKIT_PLUGINS names 'nosuch', but no installed plugin is called that (installed: alpha)"
    ]
    assert load([good], env="alpha").warnings == []


def test_a_misspelled_hook_fails_the_plugin_and_suggests_the_name(monkeypatch):
    bad = _module(monkeypatch, "fake_typo", register_grid=_grids((StepGrid, "step")))
    good = _module(monkeypatch, "fake_alpha", register_grids=_grids((OtherGrid, "other")))
    state = load([bad, good])
    error = state.plugins["typo"].error
    assert error.startswith("failed to register: register_grid is not a diffusekit hook (did you mean register_grids?)")
    assert __file__ in error and state.plugins["typo"].components == {}
    assert state.registry.resolve("grid", "alpha:other").obj is OtherGrid


def test_an_undecorated_register_function_is_a_warning_naming_it(monkeypatch):
    module = types.ModuleType("fake_plain")
    module.register_samplers = lambda register: None  # no @diffusekit.hookimpl: pluggy never calls it
    module.register_samplers.__module__ = "fake_plain"
    module.register_grids = hookimpl(_grids((StepGrid, "step")))
    monkeypatch.setitem(sys.modules, "fake_plain", module)
    state = load([md.EntryPoint("plain", "fake_plain", "diffusekit")])
    info = state.plugins["plain"]
    assert info.error is None and info.components == {"grid": ["plain:step"]}
    assert len(info.warnings) == 1
    assert info.warnings[0].startswith("register_samplers is not decorated with @diffusekit.hookimpl")
