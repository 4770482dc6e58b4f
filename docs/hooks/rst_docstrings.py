"""A griffe extension for the API reference: the docstrings are written with reStructuredText
roles (``:math:`...```, ``.. math::``, ``:class:`...```); this rewrites them for Markdown.

Maths is replaced by a placeholder holding the hex-encoded LaTeX (which Markdown leaves alone);
the ``maths`` MkDocs hook turns each placeholder into MathML after the page is rendered, so the
site needs no JavaScript, web fonts or CDN to show formulas.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def placeholder(latex: str, display: bool) -> str:
    return f"%%math-{'b' if display else 'i'}-{latex.strip().encode().hex()}%%"


def _blocks(text: str) -> str:
    """``.. math:: expr`` (on the line, or as the indented block that follows) → a paragraph
    holding a display-maths placeholder."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match["indent"].expandtabs())
        body = [match["first"]] if match["first"].strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            i -= 1  # give trailing blank lines back to the text
            body.pop()
        latex = " ".join(part.strip() for part in textwrap.dedent("\n".join(body)).splitlines() if part.strip())
        out += ["", match["indent"] + placeholder(latex, display=True), ""]
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The Markdown form of one reStructuredText docstring."""
    text = _blocks(text)
    text = _INLINE_MATH.sub(lambda m: placeholder(m[1], display=False), text)
    return _ROLE.sub(lambda m: f"`{m[1]}`", text)


class RstDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
