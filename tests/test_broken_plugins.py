"""Sixteen third-party plugins, each with one realistic newcomer bug, are all caught by one
``diffusekit check`` run, each with a one-line reason, while a correct plugin passes in the
same run; and a grid that breaks under another plugin's (correct) schedule fails its check.

Every broken component is a shipped one (a ``diffusekit_gaussian`` class or a core one)
with exactly one thing changed, so the contract that catches it is the one that names the
bug. The plugins are installed-looking distributions (``fakeplugins.write_distribution``)
and the CLI runs for real, once for all of them: checking many plugins in one process is
what keeps this fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakeplugins import assert_one_line_error, env_with, run_cli, write_distribution  # noqa: E402

# Enough Hypothesis examples that every property below finds its bug on the derandomized
# draws (runs are deterministic), few enough that the whole run stays fast.
MAX_EXAMPLES = "5"

PRELUDE = """\
from typing import ClassVar

import attrs
import torch

import diffusekit
from diffusekit import Step
"""

# name -> (module source after the prelude, the component its FAIL line names, a word of the reason)
BROKEN: dict[str, tuple[str, str, str]] = {
    # a straight data-to-noise path is a flow, not variance preserving
    "notvp": (
        '''
from diffusekit_gaussian import RectifiedFlow


@attrs.frozen
class Straight(RectifiedFlow):
    """x_t = (1 - t) x0 + t eps, declared variance preserving by mistake."""

    family: ClassVar[str] = "vp"


@diffusekit.hookimpl
def register_schedules(register):
    register(Straight, name="straight")
''',
        "notvp:straight::family_identity",
        "alpha^2 + sigma^2 = 1",
    ),
    # an Euler step that claims second order
    "overorder": (
        '''
from diffusekit_gaussian import Euler


@attrs.frozen
class FastEuler(Euler):
    """Euler's method (declares order 2 by mistake)."""

    order: ClassVar[int] = 2


@diffusekit.hookimpl
def register_samplers(register):
    register(FastEuler, name="fast_euler")
''',
        "overorder:fast_euler::declared_order",
        "declares order 2",
    ),
    # an inverse clamped "for numerical safety": wrong near both ends, where samplers use it
    "narrowinv": (
        '''
from diffusekit_gaussian import VPLinear


@attrs.frozen
class SafeVPLinear(VPLinear):
    """VP-linear whose inverse log-SNR is clamped away from the ends."""

    def t_from_log_snr(self, log_snr):
        return super().t_from_log_snr(log_snr).clamp(1e-3, 1.0 - 1e-3)


@diffusekit.hookimpl
def register_schedules(register):
    register(SafeVPLinear, name="safe_vp_linear")
''',
        "narrowinv:safe_vp_linear::inverse_log_snr",
        "t_from_log_snr(log_snr(",
    ),
    # the hook name lacks its s: pluggy would never call it
    "typohook": (
        """
from diffusekit_gaussian import DDIM


@diffusekit.hookimpl
def register_sampler(register):
    register(DDIM, name="my_ddim")
""",
        "typohook",
        "not a diffusekit hook (did you mean register_samplers?)",
    ),
    # the hook is not decorated: pluggy does not see it
    "nohookimpl": (
        """
from diffusekit_gaussian import DDIM


def register_samplers(register):
    register(DDIM, name="my_ddim")
""",
        "nohookimpl",
        "not decorated with @diffusekit.hookimpl",
    ),
    # per-sample rows for a finiteness check, never reshaped back
    "badshape": (
        '''
from diffusekit_gaussian import DDIM


@attrs.frozen
class CheckedDDIM(DDIM):
    """DDIM that checks every sample of the new state is finite."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        out = super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry)
        rows = {p: v.reshape(len(v), -1) for p, v in out.x.items()}
        for p, r in rows.items():
            if not bool(torch.isfinite(r).all(1).all()):
                raise FloatingPointError(f"non-finite sample in part {p}")
        return Step(rows, out.predictions)


@diffusekit.hookimpl
def register_samplers(register):
    register(CheckedDDIM, name="checked_ddim")
''',
        "badshape:checked_ddim::",
        "returned part",
    ),
    # "the noise has zero mean", enforced over the batch: samples depend on each other
    "batchmix": (
        '''
from diffusekit_gaussian import DDIM


@attrs.frozen
class CenteredDDIM(DDIM):
    """DDIM whose predicted noise is re-centred to zero mean."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {}
        for p in x:
            eps = pred[p].eps - pred[p].eps.mean(0, keepdim=True)
            out[p] = times.c_to[p].alpha * pred[p].x0 + times.c_to[p].sigma * eps
        return Step(out, pred)


@diffusekit.hookimpl
def register_samplers(register):
    register(CenteredDDIM, name="centered_ddim")
''',
        "batchmix:centered_ddim::rows_step_independently",
        "vs alone",
    ),
    # the new state itself, not a Step
    "baretensor": (
        '''
@attrs.frozen
class PlainEuler(diffusekit.Sampler):
    """Euler's method on the probability-flow ODE."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        pred = denoiser(x, times.t_from, condition, times.c_from)
        (p,) = x
        return pred[p].mix(times.c_to[p].alpha, times.c_to[p].sigma)


@diffusekit.hookimpl
def register_samplers(register):
    register(PlainEuler, name="plain_euler")
''',
        "baretensor:plain_euler::returns_step",
        "diffusekit.Step",
    ),
    # fresh noise from torch's global generator: a seed does not reproduce the samples
    "globalrng": (
        '''
from diffusekit_gaussian import EulerAncestral
from diffusekit_gaussian.samplers import ddim


@attrs.frozen
class MyAncestral(EulerAncestral):
    """Euler ancestral (DDIM with eta = 1)."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {p: ddim(pred[p], times.c_from[p], times.c_to[p], self.eta, torch.randn_like(v)) for p, v in x.items()}
        return Step(out, pred)


@diffusekit.hookimpl
def register_samplers(register):
    register(MyAncestral, name="my_ancestral")
''',
        "globalrng:my_ancestral::deterministic",
        "same generator",
    ),
    # one time for the whole batch, as a scheduler with a scalar timestep would
    "batchmax": (
        '''
from diffusekit.sampler import StepTimes
from diffusekit_gaussian import DDIM


@attrs.frozen
class BatchDDIM(DDIM):
    """DDIM stepping the whole batch from its largest time to its smallest."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        top = {p: t.max() for p, t in times.t_from.items()}
        low = {p: t.min() for p, t in times.t_to.items()}
        whole = StepTimes.between(denoiser.schedules, x, top, low)
        return super().update(denoiser, x, whole, condition=condition, generator=generator, carry=carry)


@diffusekit.hookimpl
def register_samplers(register):
    register(BatchDDIM, name="batch_ddim")
''',
        "batchmax:batch_ddim::rows_step_independently",
        "distinct times vs alone",
    ),
    # t clamped away from 0 "to keep the log-SNR finite": t = 0 is no longer clean data
    "noisyzero": (
        '''
from diffusekit_gaussian import VPLinear


@attrs.frozen
class FiniteVPLinear(VPLinear):
    """VP-linear evaluated at t >= 1e-5."""

    def coefficients(self, t):
        return super().coefficients(t.clamp(min=1e-5))


@diffusekit.hookimpl
def register_schedules(register):
    register(FiniteVPLinear, name="finite_vp_linear")
''',
        "noisyzero:finite_vp_linear::endpoints",
        "clean data",
    ),
    # d sigma / dt with the sign of d alpha / dt: a chain-rule slip
    "badderiv": (
        '''
from diffusekit_gaussian import VPLinear


@attrs.frozen
class MyVPLinear(VPLinear):
    """VP-linear with d_sigma = alpha d_alpha / sigma."""

    def coefficients(self, t):
        c = super().coefficients(t)
        return attrs.evolve(c, d_sigma=-c.d_sigma)


@diffusekit.hookimpl
def register_schedules(register):
    register(MyVPLinear, name="my_vp_linear")
''',
        "badderiv:my_vp_linear::derivatives",
        "d_sigma",
    ),
    # a grid stopping at eps = 1e-3, as score-SDE code does, instead of at 0
    "endeps": (
        '''
from diffusekit.builtins import UniformGrid


@attrs.frozen
class EpsGrid(UniformGrid):
    """Evenly spaced times from 1 down to 1e-3."""

    def times(self, schedule):
        return torch.linspace(self.t_max, 1e-3, self.steps + 1, dtype=torch.float64)


@diffusekit.hookimpl
def register_grids(register):
    register(EpsGrid, name="eps_grid")
''',
        "endeps:eps_grid::valid_times",
        "the last time must be exactly 0",
    ),
    # "scale 0 is no guidance" (Ho & Salimans' w); here w = 0 is the unconditional model
    "notneutral": (
        '''
from diffusekit_gaussian import ClassifierFreeGuidance


@attrs.frozen
class MyCFG(ClassifierFreeGuidance):
    """Classifier-free guidance whose neutral setting is scale 0."""

    def neutral(self):
        return attrs.evolve(self, scale=0.0, rescale=0.0)


@diffusekit.hookimpl
def register_guidances(register):
    register(MyCFG, name="my_cfg")
''',
        "notneutral:my_cfg::neutral",
        "neutral guidance vs the plain denoiser",
    ),
    # a label that never drops out: classifier-free guidance would never learn the null label
    "nodropout": (
        '''
from diffusekit import ClassLabel


@attrs.frozen(eq=False)
class FixedLabel(ClassLabel):
    """A class label (dropout forgotten)."""

    def dropout(self, p, generator=None):
        return self


@diffusekit.hookimpl
def register_conditions(register):
    register(FixedLabel, name="fixed_label")
''',
        "nodropout:fixed_label::null_and_dropout",
        "dropout(1) must null every sample",
    ),
    # v = alpha eps - sigma x0 with the signs swapped
    "vsign": (
        '''
from diffusekit_gaussian import VPrediction


@attrs.frozen
class MyV(VPrediction):
    """v-prediction with the target written by hand."""

    def target(self, x0, eps, x, c):
        return c.sigma * x0 - c.alpha * eps


@diffusekit.hookimpl
def register_parameterizations(register):
    register(MyV, name="my_v")
''',
        "vsign:my_v::round_trip",
        "recovered from the exact target",
    ),
}

# A correct third-party Gaussian schedule: Stable Diffusion's "scaled linear" betas
# (sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012) over 1000 steps) in continuous time.
# Its noise level stops at sigma~ = sigma / alpha = 14.6 at t = 1, well below the 50 to 80
# that the shipped schedules reach.
SCALED_LINEAR = '''
import math

from diffusekit import GaussianCoefficients, GaussianSchedule

A, B = math.sqrt(0.00085), math.sqrt(0.012)


@attrs.frozen
class ScaledLinear(GaussianSchedule):
    """Stable Diffusion's scaled-linear VP schedule: beta(t) = 1000 (a + (b - a) t)^2."""

    family: ClassVar[str] = "vp"

    def coefficients(self, t):
        u = A + (B - A) * t
        integral = 1000.0 * (u**3 - A**3) / (3.0 * (B - A))  # -2 log alpha
        alpha = torch.exp(-0.5 * integral)
        sigma = torch.sqrt(-torch.expm1(-integral))
        d_alpha = -500.0 * u * u * alpha
        d_sigma = 500.0 * u * u * alpha * alpha / sigma
        return GaussianCoefficients(alpha, sigma, d_alpha, d_sigma, -torch.log(torch.expm1(integral)))

    def t_from_log_snr(self, log_snr):
        integral = torch.nn.functional.softplus(-log_snr)
        cubed = 3.0 * (B - A) * integral / 1000.0  # u^3 - a^3
        u = (A**3 + cubed) ** (1.0 / 3.0)
        return cubed / (u * u + u * A + A * A) / (B - A)  # (u - a) / (b - a) without cancellation


@diffusekit.hookimpl
def register_schedules(register):
    register(ScaledLinear, name="scaled_linear")
'''

# The control: that schedule, a correct sampler and a correct grid.
GOOD = (
    SCALED_LINEAR
    + '''

from diffusekit.builtins import UniformGrid
from diffusekit_gaussian import DDIM


@attrs.frozen
class MyDDIM(DDIM):
    """DDIM, as a third-party sampler."""


@attrs.frozen
class Even(UniformGrid):
    """Evenly spaced times."""


@diffusekit.hookimpl
def register_samplers(register):
    register(MyDDIM, name="my_ddim")


@diffusekit.hookimpl
def register_grids(register):
    register(Even, name="even")
'''
)


def install(site: Path, name: str, source: str) -> None:
    write_distribution(
        site,
        dist=f"fake-{name}",
        module=f"dkbroken_{name}",
        source=PRELUDE + source,
        entry_points={name: f"dkbroken_{name}"},
    )


def test_sixteen_broken_plugins_are_caught_and_a_correct_one_passes_in_the_same_run(tmp_path):
    """One test, one ``diffusekit check -v`` run: a fixture shared by several tests would run
    once per xdist worker."""
    site = tmp_path / "site"
    for name, (source, _, _) in BROKEN.items():
        install(site, name, source)
    install(site, "good", GOOD)
    names = [*BROKEN, "good"]
    # only these plugins load (the shipped ones stay importable as libraries)
    env = env_with(site, DIFFUSEKIT_PLUGINS=",".join(names))
    result = run_cli("check", *names, "-v", "--max-examples", MAX_EXAMPLES, cwd=tmp_path, env=env, timeout=600)
    out = result.stdout
    assert "Traceback" not in out + result.stderr, result.stderr
    # every result is one line: the next line is another result, never a continuation
    assert all(line.startswith(("FAIL ", "ok   ")) for line in out.splitlines()), out
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    missed = []
    for name, (_, where, word) in BROKEN.items():
        lines = [line for line in fails if line.startswith(f"FAIL {where}")]
        if not any(word in line for line in lines):
            missed.append(f"{name}: no 'FAIL {where}...' line with {word!r} (got {lines})")
    assert not missed, "\n".join(missed) + "\n\n" + out
    # the control: every contract of every component of the correct plugin passes
    good = [line for line in out.splitlines() if line.split(" ", 1)[-1].lstrip().startswith("good:")]
    assert good and all(line.startswith("ok   ") for line in good), "\n".join(good)
    assert {line.split()[1].split("::")[0] for line in good} == {"good:scaled_linear", "good:my_ddim", "good:even"}
    # one summary line, a non-zero exit
    summary = assert_one_line_error(result)
    assert "components of 17 plugins" in summary and "2 could not be checked (typohook, nohookimpl)" in summary


# --- a grid that breaks under another plugin's schedule -------------------------------------------

# Noise levels geometric from sigma~ = 50 to 0.01, the score-SDE VE sampling range, mapped to
# each schedule's time through its inverse log-SNR and clamped into [0, 1]. Fine for every
# shipped schedule (they all reach sigma~ = 50 at t = 1), but under a schedule that stops at a
# lower noise level every level above it clamps to t = 1: repeated times.
GEOMETRIC_GRID = '''
import math


@attrs.frozen
class Geometric(diffusekit.TimeGrid):
    """Noise levels geometric from sigma~ = 50 to 0.01 (score-SDE VE), then t = 0."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    steps: int = 10

    def times(self, schedule):
        sigmas = torch.exp(torch.linspace(math.log(50.0), math.log(0.01), self.steps, dtype=torch.float64))
        t = schedule.t_from_log_snr(-2.0 * torch.log(sigmas)).clamp(0.0, 1.0)
        return torch.cat([t, t.new_zeros(1)])


@diffusekit.hookimpl
def register_grids(register):
    register(Geometric, name="geometric")
'''


def test_a_grid_is_checked_against_the_schedules_of_other_plugins(tmp_path):
    alone, both = tmp_path / "alone", tmp_path / "both"
    for site in (alone, both):
        install(site, "vegrid", GEOMETRIC_GRID)
    install(both, "sdsched", SCALED_LINEAR)
    # with the shipped schedules (and the kit's reference schedule) the grid is fine
    passed = run_cli("check", "vegrid", "--max-examples", MAX_EXAMPLES, cwd=tmp_path, env=env_with(alone))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    # a correct schedule of another plugin makes it repeat t = 1: the grid's check fails, naming
    # that schedule, while the schedule passes its own contracts
    failed = run_cli("check", "vegrid", "sdsched", "--max-examples", MAX_EXAMPLES, cwd=tmp_path, env=env_with(both))
    fails = [line for line in failed.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 1 and fails[0].startswith("FAIL vegrid:geometric::valid_times: "), failed.stdout
    assert "under schedule sdsched:scaled_linear" in fails[0] and "strictly decrease" in fails[0], fails[0]
    summary = assert_one_line_error(failed)
    assert "contracts passed on 2 components of 2 plugins" in summary and "could not be checked" not in summary
