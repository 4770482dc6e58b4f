"""``diffusekit new-plugin``: write an installable plugin package from templates.

The templates live in ``diffusekit/templates/plugin`` and use ``string.Template``
placeholders: ``$name`` (plugin name), ``$module`` (import name), ``$dist``
(distribution name) and ``$title`` (class-name prefix).
"""

from __future__ import annotations

import re
import string
from importlib.resources import files
from pathlib import Path

from diffusekit.errors import DiffusekitError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def scaffold(name: str, parent: Path) -> Path:
    """Create ``parent/name`` holding the plugin package; refuses to overwrite anything."""
    if not _NAME.match(name):
        raise DiffusekitError(f"plugin name {name!r} must start with a letter and use only a-z, 0-9 and '_'")
    root = Path(parent) / name
    if root.exists():
        raise DiffusekitError(f"{root} already exists; choose another name or --dir")
    module = f"diffusekit_{name}"
    values = {
        "name": name,
        "module": module,
        "dist": f"diffusekit-{name.replace('_', '-')}",
        "title": "".join(part.capitalize() for part in name.split("_")),
    }
    templates = files("diffusekit") / "templates" / "plugin"
    for source, relative in _walk(templates, ""):
        target = root / string.Template(relative.removesuffix(".tmpl")).substitute(values)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(string.Template(source.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
    return root


def _walk(node, prefix: str):
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        relative = f"{prefix}/{child.name}" if prefix else child.name
        if child.is_dir():
            if child.name != "__pycache__":
                yield from _walk(child, relative)
        else:
            yield child, relative
