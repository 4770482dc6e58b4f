"""MkDocs hooks of the documentation site.

* The command reference lists the installed plugins' commands too (``on_config``).
* The maths placeholders left by ``rst_docstrings`` become MathML, which browsers render
  natively: no JavaScript, fonts or CDN (``on_page_content``).
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_PARAGRAPH = re.compile(r"<p>\s*%%math-b-([0-9a-f]+)%%\s*</p>")
_ANY = re.compile(r"%%math-([bi])-([0-9a-f]+)%%")


def _mathml(hexed: str, display: bool) -> str:
    latex = bytes.fromhex(hexed).decode()
    try:
        return convert(latex, display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - a formula the converter cannot parse is shown as source
        return f"<code>{html.escape(latex)}</code>"


def on_config(config, **kwargs):
    from diffusekit.cli import with_plugin_commands

    with_plugin_commands()
    return config


def on_page_content(html_text: str, **kwargs) -> str:
    html_text = _PARAGRAPH.sub(lambda m: _mathml(m[1], True), html_text)
    return _ANY.sub(lambda m: _mathml(m[2], m[1] == "b"), html_text)
