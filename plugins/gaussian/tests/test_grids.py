"""Tabulated and fitted grids; fitting lowers the error; the optimize-grid command."""

import subprocess
import sys

import pytest
import tomllib
import torch
from diffusekit import get_registry
from diffusekit.recipe import instantiate, loads_toml
from diffusekit_gaussian import grid_fit
from diffusekit_gaussian.grid_tables import OPTIMIZED
from diffusekit_gaussian.grids import LogSNRGrid, OptimizedGrid, TabulatedGrid
from diffusekit_gaussian.samplers import Euler
from diffusekit_gaussian.schedules import EDM, VPCosine


def test_tabulated_grid_hits_its_table_and_resamples_it():
    sigmas = (80.0, 10.0, 1.0, 0.1, 0.002)
    schedule = EDM()
    t = TabulatedGrid(sigmas=sigmas).times(schedule)
    assert torch.allclose(torch.exp(-0.5 * schedule.log_snr(t[:-1])), torch.tensor(sigmas, dtype=torch.float64))
    nine = TabulatedGrid(sigmas=sigmas, steps=9).times(schedule)
    got = torch.exp(-0.5 * schedule.log_snr(nine[:-1]))
    assert torch.allclose(got[::2], torch.tensor(sigmas, dtype=torch.float64))  # table points kept
    assert torch.allclose(got[1], torch.sqrt(torch.tensor(80.0 * 10.0, dtype=torch.float64)))  # log-linear between
    with pytest.raises(ValueError, match="strictly decreasing"):
        TabulatedGrid(sigmas=(1.0, 2.0))


def test_optimized_grid_uses_the_nearest_fitted_table():
    for solver, tables in OPTIMIZED.items():
        for steps, sigmas in tables.items():
            assert len(sigmas) == steps and sigmas[0] == 80.0 and sigmas[-1] == 0.002
            assert all(b < a for a, b in zip(sigmas, sigmas[1:], strict=False))
            t = OptimizedGrid(steps=steps, solver=solver).times(EDM())
            assert torch.allclose(torch.exp(-0.5 * EDM().log_snr(t[:-1])), torch.tensor(sigmas, dtype=torch.float64))
    assert OptimizedGrid(steps=12).times(VPCosine()).shape == (13,)
    with pytest.raises(ValueError, match="no fitted tables"):
        OptimizedGrid(solver="heun")


def test_fitting_lowers_the_endpoint_error():
    targets = grid_fit.mixture_targets([(7, 4, 3, 0.1, 0.4)], samples=32)
    sigmas, before, after = grid_fit.fit(Euler(), targets, 4, iterations=25)
    assert after < 0.9 * before
    assert len(sigmas) == 4 and sigmas[0] == pytest.approx(80.0) and sigmas[-1] == pytest.approx(0.002)
    # the fitted grid evaluates to the reported error
    with torch.no_grad():
        assert grid_fit.error(Euler(), targets, torch.tensor(sigmas, dtype=torch.float64)).item() == pytest.approx(
            after
        )
    start = LogSNRGrid(steps=4).times(EDM())
    assert torch.allclose(
        grid_fit.sigmas_from(torch.zeros(3, dtype=torch.float64), 80.0, 0.002),
        torch.exp(-0.5 * EDM().log_snr(start[:-1])),
    )


def test_optimize_grid_command_writes_a_usable_grid(tmp_path):
    out = tmp_path / "grid.toml"
    command = [
        sys.executable,
        "-m",
        "diffusekit.cli",
        "optimize-grid",
        "gaussian:ddim",
        "--steps",
        "3",
        "--mixture",
        "5:4:2:0.2:0.5",
        "--samples",
        "16",
        "--iterations",
        "5",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "endpoint error" in result.stdout
    spec = tomllib.loads(out.read_text())["grid"]
    grid = instantiate(get_registry(), "grid", loads_toml(_recipe(spec)).grid, "grid")
    assert isinstance(grid, TabulatedGrid) and grid.steps == 3
    bad = subprocess.run(command[:7] + ["--mixture", "oops"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("Error: --mixture")
    assert "Traceback" not in bad.stderr


def _recipe(grid: dict) -> str:
    sigmas = ", ".join(repr(s) for s in grid["sigmas"])
    return f"""
[parts.x]
shape = [2]
schedule = "gaussian:edm"
parameterization = "gaussian:x0"
[network]
name = "gaussian:mlp"
[sampler]
name = "gaussian:ddim"
[grid]
name = "{grid["name"]}"
steps = {grid["steps"]}
sigmas = [{sigmas}]
"""
