"""`diffusekit run gaussian:digits --set sampler=...` works with every registered solver, and `show` documents it."""

import json

import pytest
from click.testing import CliRunner
from diffusekit.cli import cli
from diffusekit_gaussian import plugin


@pytest.mark.parametrize("name", sorted(plugin.SAMPLERS))
def test_run_digits_with_every_solver(name, tmp_path):
    out = tmp_path / name
    grid = ["--set", "grid.steps=3"] if name != "adaptive" else ["--set", "grid.steps=1"]
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "gaussian:digits",
            "--set",
            f"sampler=gaussian:{name}",
            *grid,
            "--num",
            "10",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "digit_9.png").is_file()


@pytest.mark.parametrize("name", sorted(plugin.SAMPLERS))
def test_show_documents_paper_order_and_nfe(name):
    result = CliRunner().invoke(cli, ["show", f"gaussian:{name}", "--kind", "sampler", "--json"])
    assert result.exit_code == 0, result.output
    [described] = json.loads(result.output)
    instance = plugin.SAMPLERS[name]()
    assert described["facts"]["order"] == instance.order
    assert described["facts"]["evaluations_per_step"] == instance.evaluations_per_step
    assert any(ch.isdigit() for ch in described["doc"].split("\n")[0] + described["doc"])  # cites a year
    assert "et al." in described["doc"] or "&" in described["doc"]  # names the authors
