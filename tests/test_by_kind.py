"""`core:by_kind`: each part stepped by the sampler of its kind, one network evaluation per step."""

from __future__ import annotations

import pytest
import torch
from diffusekit import ConfigError, ShapeError, TimePlan, get_registry
from diffusekit.by_kind import ByKind
from diffusekit.testing.categorical import ReferenceAbsorbing, SequenceOracle
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit_gaussian.schedules import VPCosine
from hypothesis import given, settings
from hypothesis import strategies as st

examples = settings(max_examples=15, deadline=None, derandomize=True)


class Joint:
    """Independent exact denoisers of a Gaussian part ``pos`` and a categorical part ``tok``; counts calls."""

    def __init__(self) -> None:
        mixture = GaussianMixture(
            torch.tensor([0.5, 0.5], dtype=torch.float64),
            torch.tensor([[-1.0, 0.5, 2.0], [1.0, -0.5, 0.0]], dtype=torch.float64),
            torch.full((2, 3), 0.3, dtype=torch.float64),
        )
        self.gaussian = OracleDenoiser({"pos": mixture}, {"pos": VPCosine()})
        self.tokens = SequenceOracle.markov_chain(ReferenceAbsorbing(num_classes=4), length=3, vocab=3, seed=1)
        self.schedules = {"pos": self.gaussian.schedules["pos"], "tok": self.tokens.schedule}
        self.calls, self.seen = 0, []

    def __call__(self, x, t, condition=None, coef=None):
        self.calls += 1
        self.seen.append({k: v.clone() for k, v in x.items()})
        g = self.gaussian(
            {"pos": x["pos"]}, {"pos": t["pos"]}, condition, None if coef is None else {"pos": coef["pos"]}
        )
        s = self.tokens({"x": x["tok"]}, {"x": t["tok"]}, condition, None if coef is None else {"x": coef["tok"]})
        return {"pos": g["pos"], "tok": s["x"]}


def sampler(name: str):
    return get_registry().resolve("sampler", name).obj()


def start(batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pos": torch.randn(batch, 3, generator=g, dtype=torch.float64), "tok": torch.full((batch, 3), 3)}


def plan(steps: int) -> TimePlan:
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return TimePlan(tuple({"pos": t, "tok": t} for t in times))


def only(p: TimePlan, part: str) -> TimePlan:
    return TimePlan(tuple({part: e[part]} for e in p.entries))


class Alone:
    """One part of :class:`Joint` as a denoiser of its own (what each sampler sees run alone)."""

    def __init__(self, joint: Joint, part: str) -> None:
        self.joint, self.part = joint, part
        self.schedules = {part: joint.schedules[part]}

    def __call__(self, x, t, condition=None, coef=None):
        if self.part == "pos":
            return self.joint.gaussian(x, t, condition, coef)
        out = self.joint.tokens(
            {"x": x["tok"]}, {"x": t["tok"]}, condition, None if coef is None else {"x": coef["tok"]}
        )
        return {"tok": out["x"]}


@examples
@given(
    st.sampled_from(["gaussian:ddim", "gaussian:dpmpp_2m", "gaussian:heun", "gaussian:unipc"]),
    st.integers(2, 8),
    st.integers(0, 2**16),
)
def test_each_part_gets_exactly_what_its_sampler_gives_alone(gaussian, steps, seed):
    """Independent parts: ``pos`` is bit for bit the Gaussian sampler's run and ``tok`` the
    categorical sampler's run with the same generator (deterministic Gaussian samplers draw nothing)."""
    joint, x, p = Joint(), start(4, seed), plan(steps)
    out = ByKind(gaussian=gaussian, categorical="masked:ancestral").sample(
        joint, x, p, generator=torch.Generator().manual_seed(seed)
    )
    pos = sampler(gaussian).sample(Alone(joint, "pos"), {"pos": x["pos"]}, only(p, "pos"))
    tok = sampler("masked:ancestral").sample(
        Alone(joint, "tok"), {"tok": x["tok"]}, only(p, "tok"), generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(out["pos"], pos["pos"])
    assert torch.equal(out["tok"], tok["tok"])
    assert bool((out["tok"] < 3).all())  # every token unmasked at t = 0


@pytest.mark.parametrize("steps", [1, 5])
def test_one_network_evaluation_per_step_for_one_step_samplers(steps):
    joint = Joint()
    ByKind(gaussian="gaussian:ddim", categorical="masked:ancestral").sample(
        joint, start(2, 0), plan(steps), generator=torch.Generator().manual_seed(0)
    )
    assert joint.calls == steps


def test_a_second_evaluation_sees_the_other_parts_at_the_step_start():
    """Heun evaluates twice a step: its second call moves only ``pos``; ``tok`` stays where the step began."""
    joint = Joint()
    ByKind(gaussian="gaussian:heun", categorical="masked:ancestral").sample(
        joint, start(2, 0), plan(3), generator=torch.Generator().manual_seed(0)
    )
    # per step: the shared evaluation, then Heun's second (none on the last step to t = 0)
    assert joint.calls == 5
    first, second = joint.seen[0], joint.seen[1]
    assert torch.equal(first["tok"], second["tok"]) and not torch.equal(first["pos"], second["pos"])


def test_gaussian_only_states_run_exactly_as_the_named_sampler():
    joint = Joint()
    alone = Alone(joint, "pos")
    x = {"pos": start(3, 5)["pos"]}
    p = only(plan(6), "pos")
    got = ByKind(gaussian="gaussian:dpmpp_2m").sample(alone, x, p)
    want = sampler("gaussian:dpmpp_2m").sample(alone, x, p)
    assert torch.equal(got["pos"], want["pos"])


def test_unnamed_or_wrong_kinds_are_one_line_errors():
    with pytest.raises(ShapeError, match="part 'tok' has a categorical schedule"):
        ByKind(gaussian="gaussian:ddim").sample(Joint(), start(2, 0), plan(2))
    with pytest.raises(ConfigError, match="categorical"):
        ByKind(gaussian="gaussian:ddim", categorical="gaussian:ddim").sample(Joint(), start(2, 0), plan(2))
    with pytest.raises(ShapeError, match="steps .*parts"):
        ByKind().sample(Joint(), start(2, 0), plan(2))


def test_settings_follow_the_named_samplers():
    both = ByKind(gaussian="gaussian:ddim", categorical="masked:ancestral")
    assert both.supports == {"gaussian", "categorical"} and both.stochastic and both.order == 1
    assert not ByKind(gaussian="gaussian:ddim").stochastic
    assert ByKind(gaussian="gaussian:heun").order == 2
    assert ByKind().supports == frozenset()
