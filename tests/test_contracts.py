"""The conformance kit catches broken components (each contract can fail)."""

import math

import attrs
import pytest
import torch
from diffusekit import ClassLabel, Guidance, Step
from diffusekit.builtins import UniformGrid
from diffusekit.sampler import StepTimes
from diffusekit.testing import contracts as kit
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_gaussian import DDIM, ClassifierFreeGuidance, EpsilonPrediction, VPLinear
from diffusekit_gaussian.schedules import GaussianCoefficients

# the kit itself emits no warnings (a torch warning from contracts.py would leak into every plugin's run)
pytestmark = pytest.mark.filterwarnings("error")


def fails(table, name, match=""):
    with pytest.raises(AssertionError, match=match):
        table[name][1]()


def passes(table, name):
    table[name][1]()


@attrs.frozen
class NoisyAtZero(TrigonometricSchedule):
    def coefficients(self, t):
        c = super().coefficients(t)
        return GaussianCoefficients(c.alpha, c.sigma + 1e-3, c.d_alpha, c.d_sigma, c.log_snr)


@attrs.frozen
class WrongDerivative(VPLinear):
    def coefficients(self, t):
        c = super().coefficients(t)
        return attrs.evolve(c, d_sigma=1.1 * c.d_sigma)


@attrs.frozen
class NotMonotone(TrigonometricSchedule):
    def coefficients(self, t):
        return super().coefficients(0.5 - (t - 0.5).abs() * 0.5 + t * 0)


def test_schedule_contracts_catch_broken_schedules():
    passes(kit.gaussian_schedule_contracts(TrigonometricSchedule()), "endpoints")
    broken = kit.gaussian_schedule_contracts(NoisyAtZero())
    fails(broken, "endpoints", "clean data")
    fails(broken, "identity_at_zero", "unchanged")
    fails(kit.gaussian_schedule_contracts(WrongDerivative()), "derivatives", "d_sigma")
    fails(kit.gaussian_schedule_contracts(NotMonotone()), "monotone_log_snr", "decrease")


@attrs.frozen
class WrongTarget(EpsilonPrediction):
    def target(self, x0, eps, x, c):
        return 0.9 * eps


def test_parameterization_contract_catches_an_inconsistent_target():
    passes(kit.gaussian_parameterization_contracts(EpsilonPrediction()), "round_trip")
    fails(kit.gaussian_parameterization_contracts(WrongTarget()), "round_trip", "recovered")


@attrs.frozen
class CountingSampler(DDIM):
    """diffusers-style hidden step state: the step index lives on the object."""

    calls: int = 0

    def update(self, denoiser, x, times, *, condition, generator, carry):
        object.__setattr__(self, "calls", self.calls + 1)  # mutable state behind a frozen facade
        out = super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry)
        return Step({k: v * (1 + 1e-3 * self.calls) for k, v in out.x.items()}, out.predictions)


@attrs.frozen
class BatchMaxTime(DDIM):
    """Ignores per-element time: steps everything with the largest time."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        top = {k: v.max() for k, v in times.t_from.items()}
        low = {k: v.min() for k, v in times.t_to.items()}
        return super().update(
            denoiser,
            x,
            StepTimes.between(denoiser.schedules, x, top, low),
            condition=condition,
            generator=generator,
            carry=carry,
        )


@attrs.frozen
class Biased(DDIM):
    def update(self, denoiser, x, times, *, condition, generator, carry):
        out = super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry)
        return Step({k: v * 1.05 for k, v in out.x.items()}, out.predictions)


def test_sampler_contracts_catch_state_ignored_time_and_bias():
    good = kit.gaussian_sampler_contracts(DDIM())
    for name in ("deterministic", "thread_safe", "reproduces_target", "unchanged_where_time_is_fixed"):
        passes(good, name)
    fails(kit.gaussian_sampler_contracts(CountingSampler()), "deterministic", "same generator")
    fails(kit.gaussian_sampler_contracts(BatchMaxTime()), "rows_step_independently", "row")
    fails(kit.gaussian_sampler_contracts(Biased()), "reproduces_target", "differ")


@attrs.frozen
class BadGrid(UniformGrid):
    def times(self, schedule):
        return torch.linspace(1.0, 0.01, self.steps + 1, dtype=torch.float64)


def test_grid_contract_requires_ending_at_zero():
    fails(kit.grid_contracts(BadGrid(), None), "valid_times", "exactly 0")
    passes(kit.grid_contracts(UniformGrid(), None), "valid_times")


@attrs.frozen
class AlwaysDoubling(Guidance):
    def wrap(self, denoiser):
        return ClassifierFreeGuidance(2.0).wrap(denoiser)

    def neutral(self):
        return self


def test_guidance_contract_requires_a_true_neutral():
    passes(kit.guidance_contracts(ClassifierFreeGuidance()), "neutral")
    fails(kit.guidance_contracts(AlwaysDoubling()), "neutral", "neutral guidance")


@attrs.frozen(eq=False)
class StubbornLabel(ClassLabel):
    def dropout(self, p, generator=None):
        return self


def test_condition_contract_catches_ignored_dropout():
    passes(kit.condition_contracts(ClassLabel), "null_and_dropout")
    fails(kit.condition_contracts(StubbornLabel), "null_and_dropout", "dropout")


def test_contracts_for_a_plugin_cover_every_component():
    from diffusekit import get_registry

    registry = get_registry()
    contracts = kit.plugin_contracts("gaussian", registry)
    covered = {c.component for c in contracts}
    assert covered == {e.qualname for e in registry.entries(plugin="gaussian")}
    assert len({c.id for c in contracts}) == len(contracts)


@attrs.frozen
class OverclaimingDDIM(DDIM):
    """A first-order step that declares order 2."""

    order = 2


def test_sampler_contract_catches_an_overclaimed_order():
    passes(kit.gaussian_sampler_contracts(DDIM()), "declared_order")
    fails(
        kit.gaussian_sampler_contracts(OverclaimingDDIM()),
        "declared_order",
        "declares order 2, but the error falls at rate 1",
    )


@attrs.frozen
class NarrowInverse(TrigonometricSchedule):
    """An inverse that holds only on [0.01, 0.99] (clamped)."""

    def t_from_log_snr(self, log_snr):
        return super().t_from_log_snr(log_snr).clamp(0.01, 0.99)


def test_schedule_contract_checks_the_inverse_near_both_ends():
    passes(kit.gaussian_schedule_contracts(TrigonometricSchedule()), "inverse_log_snr")
    passes(kit.gaussian_schedule_contracts(VPLinear()), "inverse_log_snr")
    fails(kit.gaussian_schedule_contracts(NarrowInverse()), "inverse_log_snr", r"t_from_log_snr\(log_snr\(1e-06\)\)")


@attrs.frozen
class NotQuiteVP(TrigonometricSchedule):
    """Declares variance preserving, but its sigma is 1% too large."""

    def coefficients(self, t):
        c = super().coefficients(t)
        return attrs.evolve(c, sigma=1.01 * c.sigma, d_sigma=1.01 * c.d_sigma)


def test_schedule_contract_checks_the_identity_of_the_declared_family():
    passes(kit.gaussian_schedule_contracts(TrigonometricSchedule()), "family_identity")
    fails(
        kit.gaussian_schedule_contracts(NotQuiteVP()),
        "family_identity",
        "a 'vp' schedule has alpha\\^2 \\+ sigma\\^2 = 1",
    )


@attrs.frozen
class PlainEuler(DDIM):
    """Returns the new state itself, not a Step."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        return super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry).x["x"]


@attrs.frozen
class FlatDDIM(DDIM):
    """Returns every part flattened to (B, -1)."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        out = super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry)
        return Step({p: v.reshape(len(v), -1) for p, v in out.x.items()}, out.predictions)


def test_sampler_contract_requires_a_step_with_every_part_in_its_shape():
    passes(kit.gaussian_sampler_contracts(DDIM()), "returns_step")
    fails(kit.gaussian_sampler_contracts(PlainEuler()), "returns_step", "PlainEuler.update returned a Tensor")
    fails(kit.gaussian_sampler_contracts(FlatDDIM()), "returns_step", r"returned parts \{'x': '\(4, 6\)")


@attrs.frozen
class LowCeiling(TrigonometricSchedule):
    """A correct VP schedule whose noise level stops at sigma~ = e^2.5 (about 12) at t = 1."""

    logsnr_min: float = -5.0


@attrs.frozen
class ClampedGeometric(UniformGrid):
    """Noise levels geometric from sigma~ = 50 to 0.01, mapped to time and clamped into [0, 1]."""

    supports = frozenset({"gaussian"})

    def times(self, schedule):
        sigmas = torch.exp(torch.linspace(math.log(50.0), math.log(0.01), self.steps, dtype=torch.float64))
        t = schedule.t_from_log_snr(-2.0 * torch.log(sigmas)).clamp(0.0, 1.0)
        return torch.cat([t, t.new_zeros(1)])


def test_grid_contract_runs_every_registered_schedule_and_names_it():
    from diffusekit.registry import Entry, Registry

    passes(kit.grid_contracts(ClampedGeometric(), None), "valid_times")
    registry = Registry([Entry("schedule", "third", "low_ceiling", LowCeiling)])
    fails(
        kit.grid_contracts(ClampedGeometric(), registry),
        "valid_times",
        r"under schedule third:low_ceiling, 60 steps: times must strictly decrease, but t\[0\] = 1.0 and t\[1\] = 1.0",
    )


def test_method_contract_requires_shipped_weights_trained_by_the_recipe(tmp_path):
    """Weights trained with another learning rate, or for other steps, are not the method's."""
    from diffusekit import Method, build, train
    from diffusekit_gaussian.digits import DigitsMethod

    base = DigitsMethod().recipe()
    tiny = attrs.evolve(
        base,
        network=attrs.evolve(
            base.network, params={**base.network.params, "channels": 8, "num_res_blocks": 1, "attention_levels": []}
        ),
        train=attrs.evolve(base.train, steps=2, batch_size=4, warmup_steps=0),
    )
    path = tmp_path / "w.safetensors"
    train(build(tiny), out=path, progress=False)

    class Shipped(Method):
        def __init__(self, recipe):
            self._recipe = recipe

        def recipe(self):
            return self._recipe

        def weights(self):
            return path

        def write_outputs(self, samples, condition, out_dir):
            return []

    passes(kit.method_contracts(Shipped(tiny), None), "weights")
    other_lr = attrs.evolve(tiny, train=attrs.evolve(tiny.train, lr=tiny.train.lr / 2))
    fails(kit.method_contracts(Shipped(other_lr), None), "weights", "train.lr")
    longer = attrs.evolve(tiny, train=attrs.evolve(tiny.train, steps=3))
    fails(kit.method_contracts(Shipped(longer), None), "weights", "from step 2")
