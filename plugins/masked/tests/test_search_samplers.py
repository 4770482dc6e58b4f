"""ReMDM, P2 path planning, beam search and SMC: contracts, properties and exact sequence-oracle tests.

Each oracle test says which distribution a sampler draws from when driven by the exact
denoiser of a small Markov chain (:class:`SequenceOracle`).
"""

import diffusekit as dk
import pytest
import torch
from diffusekit import TimePlan
from diffusekit.builtins import UniformGrid
from diffusekit.testing import CountingDenoiser
from diffusekit.testing.categorical import SequenceOracle
from diffusekit_masked import SMC, Absorbing, BeamSearch, PathPlanning, ReMDM
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64
FEW = settings(max_examples=8, deadline=None)


def _t(v):
    return torch.tensor(v, dtype=F64)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _tv(p, q):
    return 0.5 * (p - q).abs().sum().item()


def _log_p(oracle, seqs):
    """The oracle's log-probability of each row of ``seqs`` (its sequences are enumerated in base-V order)."""
    vocab = int(oracle.sequences.max()) + 1
    codes = (seqs * (vocab ** torch.arange(seqs.shape[1] - 1, -1, -1))).sum(-1)
    return oracle.log_probs[codes]


SAMPLERS = [
    ReMDM(strategy="cap", eta=0.3),
    ReMDM(strategy="rescale", eta=0.5),
    ReMDM(strategy="conf"),
    ReMDM(strategy="loop", eta=0.2),
    PathPlanning(),
    PathPlanning(planner="self", temperature=1.0),
    BeamSearch(beams=3),
    SMC(particles=3),
]


def test_registered_and_a_non_absorbing_process_is_refused():
    registry = dk.get_registry()
    for name, cls in (("remdm", ReMDM), ("p2", PathPlanning), ("beam", BeamSearch), ("smc", SMC)):
        assert registry.resolve("sampler", f"masked:{name}").obj is cls
    from diffusekit_masked import Uniform

    oracle = SequenceOracle.markov_chain(Uniform(num_classes=3), 3, 3)
    x = {"x": torch.zeros(2, 3, dtype=torch.long)}
    for sampler in SAMPLERS:
        with pytest.raises(dk.ShapeError):
            sampler.step(oracle, x, {"x": _t(0.5)}, {"x": _t(0.4)}, generator=_g(0))


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: repr(s)[:40])
@FEW
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 1.0), st.floats(0.0, 0.9))
def test_given_tokens_are_never_changed_and_batched_equals_per_sample_times(sampler, seed, t, frac):
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=seed % 5)
    g = _g(seed)
    x = process.corrupt(torch.randint(0, 3, (6, 4), generator=g), _t(t), g).x_t
    given_mask = torch.rand(6, 4, generator=g) < 0.4
    t_from = torch.where(given_mask, _t(0.0), _t(t))
    t_to = torch.where(given_mask, _t(0.0), _t(t * frac))
    out = sampler.step(oracle, {"x": x}, {"x": t_from}, {"x": t_to}, generator=_g(seed)).x["x"]
    assert torch.equal(out[given_mask], x[given_mask])
    assert bool(((out >= 0) & (out < 4)).all())
    # a batch of per-sample times equal to a scalar steps like the scalar
    a = sampler.step(oracle, {"x": x}, {"x": _t(t)}, {"x": _t(t * frac)}, generator=_g(seed)).x["x"]
    b = sampler.step(
        oracle,
        {"x": x},
        {"x": torch.full((6,), t, dtype=F64)},
        {"x": torch.full((6,), t * frac, dtype=F64)},
        generator=_g(seed),
    ).x["x"]
    assert torch.equal(a, b)


# --- ReMDM -------------------------------------------------------------------------------------


def test_remdm_keeps_the_forward_marginal_and_conf_does_not():
    """cap / rescale / loop: the fraction of decoded tokens at t is exactly alpha (loop: alpha(t_on)
    inside the loop), whatever the denoiser; conf spends its budget without compensation."""
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=0)
    plan = TimePlan.from_grid(UniformGrid(steps=20), oracle.schedules)
    half = TimePlan(plan.entries[:11])  # t = 1 -> 0.5, alpha = 0.5
    fractions = {}
    for sampler in (ReMDM("cap", 0.3), ReMDM("rescale", 0.5), ReMDM("loop", 0.2), ReMDM("conf")):
        out = sampler.sample(oracle, (4000, 4), half, generator=_g(1))
        fractions[sampler.strategy] = (out != 3).double().mean().item()
    assert fractions["cap"] == pytest.approx(0.5, abs=0.02)
    assert fractions["rescale"] == pytest.approx(0.5, abs=0.02)
    assert fractions["loop"] == pytest.approx(0.45, abs=0.02)  # held at alpha(t_on = 0.55)
    assert fractions["conf"] < 0.2  # measured 0.06: most tokens are remasked and decoded late


def test_remdm_samples_the_oracle_distribution():
    """With the exact denoiser, heavy remasking (cap 0.3, rescale 0.5, loop 0.2) still samples the
    target: TV within Monte-Carlo error, like MDLM's ancestral sampler (measured 0.004-0.018 vs
    0.005-0.011; the noise floor at 20000 draws of 8 sequences is about 0.008). conf is not
    marginal-preserving, yet with exact conditionals its remask-and-redraw moves are Gibbs-like:
    measured TV 0.009-0.021."""
    process = Absorbing(num_classes=3)
    oracle = SequenceOracle.markov_chain(process, 3, 2, seed=0)
    target = oracle.distribution()
    grid = UniformGrid(steps=32)
    for sampler in (ReMDM("cap", 0.3), ReMDM("rescale", 0.5), ReMDM("loop", 0.2), ReMDM("conf")):
        out = sampler.sample(oracle, (20000, 3), grid, generator=_g(1))
        assert bool((out < 2).all())
        tv = _tv(oracle.empirical(out), target)
        assert tv < (0.04 if sampler.strategy == "conf" else 0.03), (sampler.strategy, tv)


def test_remdm_remasks_decoded_tokens_at_rate_sigma():
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=2)
    x = torch.tensor([[0, 1, 2, 0]]).expand(20000, 4)  # all decoded: only remasking can happen
    out = ReMDM("cap", eta=0.1).step(oracle, {"x": x}, {"x": _t(0.5)}, {"x": _t(0.45)}, generator=_g(0)).x["x"]
    # sigma = min(0.1, (1 - 0.55) / 0.5) = 0.1
    assert (out == 3).double().mean().item() == pytest.approx(0.1, abs=0.006)
    out = ReMDM("cap", eta=0.0).step(oracle, {"x": x}, {"x": _t(0.5)}, {"x": _t(0.45)}, generator=_g(0)).x["x"]
    assert torch.equal(out, x)  # eta = 0 is MDLM


# --- P2 ----------------------------------------------------------------------------------------


def test_p2_random_order_without_remasking_samples_the_oracle():
    process = Absorbing(num_classes=3)
    oracle = SequenceOracle.markov_chain(process, 3, 2, seed=1)
    sampler = PathPlanning(order_by="random", temperature=1.0, eta=0.0)
    assert sampler.stochastic and not PathPlanning().stochastic
    out = sampler.sample(oracle, (20000, 3), UniformGrid(steps=24), generator=_g(3))
    assert _tv(oracle.empirical(out), oracle.distribution()) < 0.03  # measured 0.013-0.020


@FEW
@given(st.integers(0, 2**31 - 1), st.floats(0.2, 1.0))
def test_p2_self_planning_never_remasks_under_a_carry_over_denoiser(seed, t):
    """The oracle (like SUBS) predicts a decoded token as itself with probability 1: self-planning P2
    is then plain ordered decoding, whatever eta."""
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=seed % 7)
    g = _g(seed)
    x = process.corrupt(torch.randint(0, 3, (16, 4), generator=g), _t(t), g).x_t
    out = PathPlanning(planner="self", eta=5.0).step(oracle, {"x": x}, {"x": _t(t)}, {"x": _t(0.6 * t)}).x["x"]
    known = x != 3
    assert torch.equal(out[known], x[known])


@FEW
@given(st.integers(0, 2**31 - 1), st.floats(0.5, 3.0))
def test_p2_leave_one_out_planner_swaps_exactly_as_the_scores_say(seed, eta):
    """One decoded token among masks, a step that decodes no new token (k = 0): the decoded token
    stays iff eta * log p(x_i | rest) >= the best masked position's log max_v p(v); otherwise it
    is remasked and that position takes its argmax. The scores come from the oracle itself."""
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=seed % 11)
    g = _g(seed)
    pos = int(torch.randint(0, 4, (1,), generator=g))
    value = int(torch.randint(0, 3, (1,), generator=g))
    x = torch.full((1, 4), 3)
    x[0, pos] = value
    out = PathPlanning(eta=eta).step(oracle, {"x": x}, {"x": _t(0.5)}, {"x": _t(0.49)}).x["x"]
    probs = oracle({"x": x}, {"x": _t(0.5)})["x"].probs[0].double()
    alone = oracle({"x": torch.full((1, 4), 3)}, {"x": _t(0.5)})["x"].probs[0, pos, value].double()
    best = probs.max(-1).values.masked_fill(torch.arange(4) == pos, -1.0)
    if eta * torch.log(alone) >= torch.log(best.max()) - 1e-6:
        expect = x
    else:
        expect = torch.full((1, 4), 3)
        j = int(best.argmax())
        expect[0, j] = int(probs[j].argmax())
    if abs(float(eta * torch.log(alone) - torch.log(best.max()))) > 1e-4:  # away from float ties
        assert torch.equal(out, expect)
    assert int((out != 3).sum()) == 1  # the count of decoded tokens follows the schedule


# --- beam search and SMC -----------------------------------------------------------------------


def _last_carry(sampler, oracle, x, plan, seed=0):
    seen = []
    out = sampler.sample(oracle, x, plan, generator=_g(seed), callback=lambda info: seen.append(info["step"].carry))
    return out, seen[-1]


@FEW
@given(st.integers(0, 2**31 - 1))
def test_path_log_probability_is_the_oracle_log_probability_along_any_order(seed):
    """Chain rule: one token per network call, random orders (SMC particles) and searched orders
    (beams); every finished candidate's score equals log p(sequence) under the oracle."""
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=seed % 13)
    grid = UniformGrid(steps=4)
    for sampler in (SMC(particles=8, tokens_per_step=1), BeamSearch(beams=6, tokens_per_step=1)):
        _, carry = _last_carry(sampler, oracle, (5, 4), grid, seed)
        tokens, score = carry.tokens.reshape(-1, 4), carry.score.reshape(-1)
        live = torch.isfinite(score)
        assert bool((tokens[live] < 3).all())
        torch.testing.assert_close(score[live], _log_p(oracle, tokens[live]), rtol=0, atol=2e-5)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_beam_search_with_enough_beams_returns_the_mode(seed):
    """With max_d C(4, d) 3^d = 108 beams no partial sequence is ever dropped: a most probable
    sequence of the oracle. A Markov chain can have several (the same transitions in another
    order, e.g. 2202 and 2022), so the check is on the probability, not the sequence."""
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=seed)
    out = BeamSearch(beams=108, tokens_per_step=1).sample(oracle, (2, 4), UniformGrid(steps=4))
    best = oracle.log_probs.max()
    torch.testing.assert_close(_log_p(oracle, out), best.expand(2), rtol=0, atol=1e-9)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_beam_search_completes_given_tokens_with_the_most_probable_completion(seed):
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=seed)
    g = _g(seed)
    given_mask = torch.rand(3, 4, generator=g) < 0.5
    truth = oracle.sequences[torch.randint(0, 81, (3,), generator=g)]
    x = torch.where(given_mask, truth, torch.full_like(truth, 3))
    plan = TimePlan.from_grid(UniformGrid(steps=4), oracle.schedules).hold("x", given_mask)
    out = BeamSearch(beams=108, tokens_per_step=1).sample(oracle, x, plan)
    for b in range(3):
        consistent = (oracle.sequences == truth[b]).where(given_mask[b], torch.ones_like(truth[b], dtype=torch.bool))
        allowed = oracle.log_probs.masked_fill(~consistent.all(1), -torch.inf)
        assert torch.equal(out[b][given_mask[b]], truth[b][given_mask[b]])
        # a most probable completion (ties: see the test above)
        torch.testing.assert_close(_log_p(oracle, out[b : b + 1])[0], allowed.max(), rtol=0, atol=1e-9)


def test_search_evaluates_every_candidate_once_per_step():
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 5, 3)
    for sampler, width in ((BeamSearch(beams=4, tokens_per_step=1), 4), (SMC(particles=6, tokens_per_step=1), 6)):
        counting = CountingDenoiser(oracle)
        sampler.sample(counting, (7, 5), UniformGrid(steps=5), generator=_g(0))
        assert (counting.calls, counting.rows) == (5 * width, 5 * 7 * width)  # a call per candidate slot
    counting = CountingDenoiser(oracle)
    PathPlanning().sample(counting, (7, 5), UniformGrid(steps=5))
    assert counting.calls == 9  # plus one leave-one-out call in every step with decoded tokens


def test_beam_search_beats_greedy_and_smc_samples_the_target_or_its_sharpening():
    process = Absorbing(num_classes=3)
    oracle = SequenceOracle.markov_chain(process, 3, 2, seed=0)
    target = oracle.distribution()
    grid = UniformGrid(steps=3)
    # lambda = 1, tau = 1: every incremental weight is 0, the particles are independent exact decodings
    out, carry = _last_carry(SMC(particles=4), oracle, (20000, 3), grid, seed=2)
    assert float(carry.log_weight.abs().max()) < 1e-5
    assert _tv(oracle.empirical(out), target) < 0.03  # measured 0.01
    # lambda = 2 with the tau = 1/2 proposal targets p^2 (measured TV 0.001-0.006; 0.15 from p)
    sharp = torch.softmax(2 * oracle.log_probs, 0)
    out = SMC(particles=16, sharpness=2.0, temperature=0.5).sample(oracle, (20000, 3), grid, generator=_g(3))
    assert _tv(oracle.empirical(out), sharp) < 0.02
    assert _tv(oracle.empirical(out), target) > 0.1
    # one beam is greedy decoding; more beams never find a less likely sequence here
    o5 = SequenceOracle.markov_chain(Absorbing(num_classes=4), 5, 3, seed=1)
    greedy = BeamSearch(beams=1).sample(o5, (1, 5), UniformGrid(steps=5))
    wide = BeamSearch(beams=4).sample(o5, (1, 5), UniformGrid(steps=5))
    assert float(_log_p(o5, wide)) > float(_log_p(o5, greedy)) + 0.1  # -1.92 (the mode) vs -2.31
    assert float(_log_p(o5, wide)) == pytest.approx(float(o5.log_probs.max()), abs=1e-6)
