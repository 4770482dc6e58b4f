"""The registry of components: qualified names ``plugin:name`` per kind.

A bare name resolves when exactly one plugin registered it for that kind; an unknown
or ambiguous name raises an error that lists the candidates. A class registered under
several names is one component with aliases (kept when a component moves to another
plugin, so recipes that name it still load): its first name, in plugin load order, is
the canonical one that :meth:`Registry.name_of` gives and recipes save.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from diffusekit.condition import Condition
from diffusekit.data import Dataset
from diffusekit.errors import AmbiguousComponent, ComponentNotFound, DuplicateComponent
from diffusekit.guidance import Guidance
from diffusekit.method import Method
from diffusekit.network import Network
from diffusekit.objective import Objective
from diffusekit.parameterization import Parameterization
from diffusekit.sampler import Sampler, TimeGrid
from diffusekit.schedule import Schedule

KINDS: dict[str, type] = {
    "schedule": Schedule,
    "parameterization": Parameterization,
    "network": Network,
    "sampler": Sampler,
    "grid": TimeGrid,
    "condition": Condition,
    "guidance": Guidance,
    "dataset": Dataset,
    "method": Method,
    "objective": Objective,
}
"""Component kinds and the base class each registered component must subclass."""

HOOKS: dict[str, str] = {
    "schedule": "register_schedules",
    "parameterization": "register_parameterizations",
    "network": "register_networks",
    "sampler": "register_samplers",
    "grid": "register_grids",
    "condition": "register_conditions",
    "guidance": "register_guidances",
    "dataset": "register_datasets",
    "method": "register_methods",
    "objective": "register_objectives",
}
"""The registration hook of each kind."""

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@attrs.frozen
class Entry:
    """One registered component."""

    kind: str
    plugin: str
    name: str
    obj: type = attrs.field(eq=False)

    @property
    def qualname(self) -> str:
        return f"{self.plugin}:{self.name}"

    @property
    def summary(self) -> str:
        doc = (self.obj.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def check_component(kind: str, obj: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``obj`` can be registered as a ``kind`` named ``name``."""
    base = KINDS[kind]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise TypeError(f"{obj!r} registered as {kind} {name!r} is not a subclass of diffusekit.{base.__name__}")
    if not attrs.has(obj):
        raise TypeError(f"{kind} {name!r} ({obj.__name__}) must be an attrs class (its fields are its parameters)")
    if not _NAME.match(name):
        raise ValueError(f"component name {name!r} must be lower case letters, digits, '_', '-' or '.'")


class Registry:
    """Components by kind and qualified name. Built by :mod:`diffusekit.plugins`; read-only afterwards."""

    def __init__(self, entries: Iterable[Entry] = (), failed: Mapping[str, str] | None = None) -> None:
        self._by_kind: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._by_type: dict[type, Entry] = {}
        self.failed: Mapping[str, str] = dict(failed or {})
        """The plugins that failed to load or register, with their errors: a name of theirs is
        reported as belonging to a broken plugin rather than as unknown."""
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        table = self._by_kind[entry.kind]
        if entry.qualname in table:
            raise DuplicateComponent(
                f"{entry.kind} {entry.qualname!r} is registered twice "
                f"({table[entry.qualname].obj.__module__}.{table[entry.qualname].obj.__qualname__} and "
                f"{entry.obj.__module__}.{entry.obj.__qualname__})"
            )
        table[entry.qualname] = entry
        self._by_type.setdefault(entry.obj, entry)

    def entries(self, kind: str | None = None, plugin: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [
            e
            for k in kinds
            for e in sorted(self._by_kind[k].values(), key=lambda e: e.qualname)
            if plugin is None or e.plugin == plugin
        ]

    def resolve(self, kind: str, name: str) -> Entry:
        """The entry of ``kind`` called ``name`` (qualified, or bare when unique)."""
        if kind not in KINDS:
            raise ComponentNotFound(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        table = self._by_kind[kind]
        if name in table:
            return table[name]
        if ":" not in name:
            matches = [e for e in table.values() if e.name == name]
            if matches and len({e.obj for e in matches}) == 1:  # one component, perhaps under aliases
                return self._by_type[matches[0].obj]
            if len(matches) > 1:
                names = ", ".join(sorted(e.qualname for e in matches))
                raise AmbiguousComponent(f"{kind} {name!r} is ambiguous; use one of: {names}")
        raise self.not_found(name, kind)

    def not_found(self, name: str, kind: str | None = None) -> ComponentNotFound:
        """The error for a ``name`` nobody registered: which plugin broke, or close names."""
        plugin = name.split(":", 1)[0] if ":" in name else None
        what = f"{kind} {name!r}" if kind else repr(name)
        if plugin in self.failed:
            return ComponentNotFound(f"{what}: plugin {plugin!r} {self.failed[plugin]}")
        entries = self.entries(kind)
        known = sorted({e.qualname for e in entries})
        close = difflib.get_close_matches(name, list(dict.fromkeys(known + [e.name for e in entries])), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        if kind is None:
            listing = "see 'diffusekit list'"
        else:
            listing = f"available: {', '.join(known)}" if known else "none registered"
        broken = f"; plugins that failed to load: {', '.join(sorted(self.failed))}" if self.failed else ""
        return ComponentNotFound(f"unknown {kind or 'component'} {name!r}{hint} ({listing}){broken}")

    def find(self, name: str) -> list[Entry]:
        """Entries of any kind called ``name`` (for ``diffusekit show``)."""
        found = []
        for kind in KINDS:
            try:
                found.append(self.resolve(kind, name))
            except AmbiguousComponent:
                found.extend(e for e in self._by_kind[kind].values() if e.name == name)
            except ComponentNotFound:
                pass
        return found

    def canonical(self, entry: Entry) -> Entry:
        """The entry whose name ``entry``'s component goes by (``entry`` itself unless it is an alias)."""
        return self._by_type[entry.obj]

    def name_of(self, obj: object) -> Entry:
        """The entry an instance (or class) was registered as."""
        cls = obj if isinstance(obj, type) else type(obj)
        if cls not in self._by_type:
            raise ComponentNotFound(f"{cls.__module__}.{cls.__qualname__} is not a registered component")
        return self._by_type[cls]
