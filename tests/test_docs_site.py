"""The documentation site builds offline with ``mkdocs build --strict``, and its two hooks do
what they claim: reStructuredText maths becomes MathML, plugin commands reach the reference."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rst_maths_and_roles_become_markdown_placeholders():
    rst = _module("rst_docstrings")
    text = (
        "Intro with :math:`\\alpha_t` and :class:`~diffusekit.State`.\n\n"
        ".. math:: x = y\n\n"
        "Between.\n\n"
        "    .. math::\n\n"
        "        a +\n"
        "        b\n\n"
        "    After.\n"
    )
    out = rst.rewrite(text)
    found = re.findall(r"%%math-([bi])-([0-9a-f]+)%%", out)
    assert [(kind, bytes.fromhex(h).decode()) for kind, h in found] == [
        ("i", "\\alpha_t"),
        ("b", "x = y"),
        ("b", "a + b"),
    ]
    assert "`diffusekit.State`" in out and ":class:" not in out
    assert "Between." in out and "    After." in out  # text around a block is kept, indentation too


def test_placeholders_become_mathml_and_bad_latex_stays_readable():
    rst, site = _module("rst_docstrings"), _module("site")
    page = f"<p>{rst.placeholder('x^2', display=True)}</p><p>a {rst.placeholder('y_1', display=False)} b</p>"
    html = site.on_page_content(page)
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in html
    assert 'display="inline"' in html and "%%math" not in html and "<p><math" not in html
    broken = site.on_page_content(rst.placeholder("\\left( x < y", display=False))
    assert broken == "<code>\\left( x &lt; y</code>"  # the converter refuses it: the source is shown


def test_site_builds_strictly_offline(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": str(Path(sys.executable).parent), "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "cli-reference" / "index.html").read_text()
    for command in ("train", "check", "optimize-grid"):  # optimize-grid comes from the gaussian plugin
        assert f'id="diffusekit-{command}"' in reference
    api = (tmp_path / "api" / "core" / "index.html").read_text()
    assert "<math" in api and "%%math" not in api and ":math:" not in api
    assert "fonts.googleapis" not in (tmp_path / "index.html").read_text()


def test_every_plugin_page_shows_an_output_that_exists():
    # the nav's "Plugins" section: each method family's page carries a picture of its output
    nav = (ROOT / "mkdocs.yml").read_text()
    section = nav.split("  - Plugins:\n", 1)[1].split("\n  - ", 1)[0]
    pages = re.findall(r":\s*(\S+\.md)", section)
    assert len(pages) >= 7, section
    for page in pages:
        images = re.findall(r"!\[[^\]]+\]\((images/[^)]+)\)", (ROOT / "docs" / page).read_text())
        assert images, f"docs/{page} shows no picture of its output"
        for image in images:
            assert (ROOT / "docs" / image).is_file(), f"docs/{page} shows {image}, which does not exist"
