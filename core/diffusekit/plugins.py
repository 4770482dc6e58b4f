"""Plugin discovery and loading.

Plugins are modules named by entry points in the ``diffusekit`` group. Each is
imported and its ``register_*`` hooks are called one plugin at a time, so a plugin that
fails to import or to register is recorded with its error and left out, while every
other plugin loads. The built-in plugin ``core`` (generic components) is registered
through the same hooks.

``DIFFUSEKIT_PLUGINS`` restricts loading to a comma-separated list of plugin names
(an empty value loads none but ``core``), like ``LLM_LOAD_PLUGINS`` in simonw/llm.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import attrs
import pluggy

from diffusekit import hookspecs
from diffusekit.registry import HOOKS, Entry, Registry, check_component, snake_case

ENTRY_POINT_GROUP = "diffusekit"
ENV_VAR = "DIFFUSEKIT_PLUGINS"
BUILTIN = "core"


@attrs.define
class PluginInfo:
    """What ``diffusekit plugins`` reports about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    hooks: list[str] = attrs.Factory(list)
    components: dict[str, list[str]] = attrs.Factory(dict)
    error: str | None = None
    builtin: bool = False
    warnings: list[str] = attrs.Factory(list)
    """Mistakes that lose nothing yet (a ``register_*`` function without ``@diffusekit.hookimpl``)."""
    traceback: str | None = attrs.field(default=None, repr=False)
    """The full traceback of :attr:`error` (printed by the CLI under ``DIFFUSEKIT_DEBUG=1``)."""

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self, filter=lambda field, _: field.name != "traceback")

    def fail(self, stage: str, exc: BaseException) -> None:
        """Record that the plugin failed to ``stage`` ("load", "register") with ``exc``."""
        self.error = f"failed to {stage}: {describe_failure(exc)}"
        self.traceback = "".join(traceback.format_exception(exc))


@attrs.frozen(eq=False)
class LoadedPlugins:
    """The outcome of loading: the plugin manager, the registry and a report per plugin."""

    manager: pluggy.PluginManager
    registry: Registry
    plugins: dict[str, PluginInfo]
    warnings: list[str] = attrs.Factory(list)
    """Problems that belong to no one plugin (an unknown name in ``DIFFUSEKIT_PLUGINS``)."""


def describe_failure(exc: BaseException) -> str:
    """One line: the exception and where in the plugin's code it was raised (``file:line``)."""
    if isinstance(exc, SystemExit):
        text = f"called sys.exit({exc.code!r})"
    else:
        text = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__).splitlines()[0]
    where = _plugin_frame(exc)
    return f"{text} ({where})" if where else text


def _plugin_frame(exc: BaseException) -> str | None:
    """``file:line`` of the innermost frame outside the import machinery, pluggy and diffusekit itself."""
    skip = (os.path.dirname(pluggy.__file__), os.path.dirname(os.path.abspath(__file__)))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(("<", *skip))]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


class _UserInterrupts:
    """Tells the user's Ctrl-C from a ``KeyboardInterrupt`` that plugin code raises itself.

    While active (main thread only: signals reach no other), SIGINT is recorded before it
    is turned into ``KeyboardInterrupt`` as usual; :meth:`plugin_failed` is then true for
    every exception from plugin code except an interrupt the user really sent.
    """

    def __enter__(self) -> _UserInterrupts:
        self.received = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received = True
        raise KeyboardInterrupt

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def plugin_failed(self, exc: BaseException) -> bool:
        return not (isinstance(exc, KeyboardInterrupt) and self.received)


def call_plugin(function: Callable[..., Any], *args: Any, **kwargs: Any) -> BaseException | None:
    """Call plugin code; return what it raised (``SystemExit`` and ``KeyboardInterrupt`` included,
    so a plugin cannot end the process), or ``None``. The user's own Ctrl-C is re-raised."""
    with _UserInterrupts() as interrupts:
        try:
            function(*args, **kwargs)
        except BaseException as exc:
            if not interrupts.plugin_failed(exc):
                raise
            return exc
    return None


def _allowed(env: str | None) -> set[str] | None:
    if env is None:
        return None
    return {name.strip() for name in env.split(",") if name.strip()}


def load(
    entry_points: Iterable[md.EntryPoint] | None = None,
    *,
    env: str | None = None,
    builtins: ModuleType | None = None,
) -> LoadedPlugins:
    """Discover, import and register plugins (see the module docstring)."""
    manager = pluggy.PluginManager("diffusekit")
    manager.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    modules: dict[str, object] = {}

    if builtins is None:
        from diffusekit import builtins as builtins_module

        builtins = builtins_module
    manager.register(builtins, name=BUILTIN)
    modules[BUILTIN] = builtins
    infos[BUILTIN] = PluginInfo(BUILTIN, "diffusekit", _version("diffusekit"), builtins.__name__, builtin=True)

    allowed = _allowed(env)
    if entry_points is None:
        entry_points = md.entry_points(group=ENTRY_POINT_GROUP)
    claims: dict[str, dict[tuple[str, str | None], md.EntryPoint]] = {}
    entry_points = list(entry_points)
    warnings = [
        f"{ENV_VAR} names {name!r}, but no installed plugin is called that "
        f"(installed: {', '.join(sorted({ep.name for ep in entry_points})) or 'none'})"
        for name in sorted((allowed or set()) - {ep.name for ep in entry_points} - {BUILTIN})
    ]
    for ep in entry_points:
        if allowed is None or ep.name in allowed:
            # the same distribution can be seen twice (duplicate sys.path entries): count it once
            claims.setdefault(ep.name, {})[(ep.value, _dist_name(ep))] = ep
    for name, eps in sorted(claims.items()):
        infos_here = [_info(ep) for ep in eps.values()]
        if name == BUILTIN or len(infos_here) > 1:
            # no silent winner: which one would load would depend on sys.path and directory order
            who = ", ".join(sorted(i.distribution or i.module or "?" for i in infos_here))
            why = "is reserved for diffusekit's built-in plugin" if name == BUILTIN else f"is claimed by {who}"
            for info in infos_here:
                info.error = f"plugin name {name!r} {why}; not loaded (uninstall all but one)"
                infos[f"{name} ({info.distribution or info.module})"] = info
            continue
        (ep,) = eps.values()
        info = infos[name] = infos_here[0]
        # a broken plugin must not break the others, nor end the process (sys.exit at import)
        failure = call_plugin(lambda ep=ep, name=name: manager.register(ep.load(), name=name))
        if failure is not None:
            info.fail("load", failure)
            continue
        modules[name] = manager.get_plugin(name)

    registry = Registry()
    for name, module in modules.items():
        _register_plugin(manager, registry, infos[name], module)
    registry.failed = {info.name: info.error for info in infos.values() if info.error}
    return LoadedPlugins(manager, registry, infos, warnings)


def _dist_name(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _info(ep: md.EntryPoint) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    return PluginInfo(ep.name, _dist_name(ep), dist.version if dist is not None else None, ep.value)


HOOK_NAMES = frozenset(name for name in dir(hookspecs) if name.startswith("register_"))


def _hook_problems(manager: pluggy.PluginManager, module: object) -> tuple[str | None, list[str]]:
    """What pluggy would not call: a hookimpl whose name is no hook (an error, as in pytest),
    and ``register_*`` functions without ``@diffusekit.hookimpl`` (warnings: they are never called)."""
    unknown = [impl.name for impl in manager.get_hookcallers(module) or [] if not impl.has_spec()]
    error = None
    if unknown:
        name = sorted(unknown)[0]
        error = f"{name} is not a diffusekit hook{_did_you_mean(name)} ({_where(getattr(module, name, None))})"
    warnings = [
        f"{name} is not decorated with @diffusekit.hookimpl, so it is never called{_did_you_mean(name)} "
        f"({_where(value)})"
        for name, value in sorted(vars(module).items() if hasattr(module, "__dict__") else [])
        if name.startswith("register_")
        and callable(value)
        and getattr(value, "__module__", None) == getattr(module, "__name__", None)
        and manager.parse_hookimpl_opts(module, name) is None
    ]
    return error, warnings


def _did_you_mean(name: str) -> str:
    if name in HOOK_NAMES:
        return ""
    close = difflib.get_close_matches(name, sorted(HOOK_NAMES), n=1)
    return f" (did you mean {close[0]}?)" if close else f" (hooks: {', '.join(sorted(HOOK_NAMES))})"


def _where(function: object) -> str:
    code = getattr(function, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "?"


def _register_plugin(manager: pluggy.PluginManager, registry: Registry, info: PluginInfo, module: object) -> None:
    """Call the plugin's ``register_*`` hooks; on any error keep none of its components."""
    info.hooks = sorted(impl.name for impl in manager.get_hookcallers(module) or [])
    error, info.warnings = _hook_problems(manager, module)
    if error is not None:  # its components would silently vanish: the plugin is left out, like pytest does
        info.error = f"failed to register: {error}"
        return
    staged: list[Entry] = []

    def register_all() -> None:
        for kind, hook in HOOKS.items():
            impl = getattr(module, hook, None)
            if impl is not None and hook in info.hooks:
                impl(register=_register_callback(kind, info.name, staged))
        Registry(staged)  # duplicates within the plugin (names of other plugins cannot clash)

    failure = call_plugin(register_all)
    if failure is not None:
        info.fail("register", failure)
        info.components = {}
        return
    for entry in staged:
        registry.add(entry)
        info.components.setdefault(entry.kind, []).append(entry.qualname)


def _register_callback(kind: str, plugin: str, staged: list[Entry]) -> Callable[..., None]:
    def register(component: type, name: str | None = None) -> None:
        name = name or snake_case(getattr(component, "__name__", str(component)))
        check_component(kind, component, name)
        staged.append(Entry(kind, plugin, name, component))

    register.__doc__ = f"Register a {kind} of plugin {plugin!r} as ``{plugin}:<name>``."
    return register


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


_lock = threading.Lock()
_loaded: LoadedPlugins | None = None


def loaded() -> LoadedPlugins:
    """The plugins of this process, loaded on first use (honours ``DIFFUSEKIT_PLUGINS``)."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = load(env=os.environ.get(ENV_VAR))
        return _loaded


def get_registry() -> Registry:
    """The registry of this process's plugins."""
    return loaded().registry


def reset() -> None:
    """Forget loaded plugins (the next use discovers them again)."""
    global _loaded
    with _lock:
        _loaded = None
