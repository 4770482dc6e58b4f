"""diffusekit samplers on diffusers models, and in diffusers pipelines, against diffusers' own
schedulers on the same tiny random models (no weights are downloaded)."""

import gc
import sys

import diffusekit as dk
import diffusers
import pytest
import torch
from diffusekit import ShapeError
from diffusekit_diffusers import DiffusekitScheduler, DiffusersTimesteps, denoiser
from diffusekit_gaussian import dpm_solver, samplers

SHAPE = (2, 3, 8, 8)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def images(pipe, steps, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    return torch.from_numpy(
        pipe(batch_size=2, num_inference_steps=steps, generator=g, output_type="np", **kwargs).images
    )


@pytest.mark.parametrize(
    ("options", "sampler", "call"),
    [
        ({"clip_sample": False}, "gaussian:ddim", {}),
        ({"clip_sample": False, "prediction_type": "v_prediction"}, "gaussian:ddim", {}),
        ({"clip_sample": True}, "gaussian:ddim", {"use_clipped_model_output": True}),
    ],
    ids=["eps", "v", "clipped"],
)
def test_ddim_pipeline_with_a_diffusekit_scheduler_makes_the_same_images(unet, options, sampler, call):
    pipe = diffusers.DDIMPipeline(unet, diffusers.DDIMScheduler(**options))
    theirs = images(pipe, 10, **call)
    pipe.scheduler = DiffusekitScheduler.from_scheduler(pipe.scheduler, sampler)
    ours = images(pipe, 10, **call)
    assert theirs.std() > 0.05  # not a blank image
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_stochastic_ddim_draws_the_same_noise(unet):
    # DDIMPipeline's eta goes to the sampler; the generator the pipeline hands to step feeds it
    pipe = diffusers.DDIMPipeline(unet, diffusers.DDIMScheduler(clip_sample=False))
    theirs = images(pipe, 8, eta=1.0)
    pipe.scheduler = DiffusekitScheduler.from_scheduler(pipe.scheduler, 'gaussian:ddim{"eta": 1.0}')
    ours = images(pipe, 8)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # and a deterministic sampler refuses DDIMScheduler's eta instead of ignoring it
    with pytest.raises(ShapeError, match="give it to the sampler"):
        images(pipe, 8, eta=1.0)


@pytest.mark.parametrize(
    ("scheduler", "sampler", "steps"),
    [
        (diffusers.DDPMScheduler(), "gaussian:ddpm", 25),
        (diffusers.DPMSolverMultistepScheduler(), "gaussian:dpmpp_2m", 10),
        (diffusers.DPMSolverMultistepScheduler(prediction_type="v_prediction"), "gaussian:dpmpp_2m", 20),
    ],
    ids=["ddpm", "dpmpp_2m", "dpmpp_2m_v"],
)
def test_ddpm_pipeline_with_a_diffusekit_scheduler_makes_the_same_images(unet, scheduler, sampler, steps):
    pipe = diffusers.DDPMPipeline(unet, scheduler)
    theirs = images(pipe, steps)
    pipe.scheduler = DiffusekitScheduler.from_scheduler(scheduler, sampler)
    ours = images(pipe, steps)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def _their_loop(unet, scheduler, steps, x):
    """diffusers' own sampling loop (what its pipelines do), from the VP-scaled noise x."""
    scheduler.set_timesteps(steps)
    sample = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        sample = scheduler.step(unet(scheduler.scale_model_input(sample, t), t).sample, t, sample).prev_sample
    return sample


@pytest.mark.parametrize(
    ("scheduler", "sampler"),
    [
        (diffusers.DDIMScheduler(clip_sample=False), samplers.DDIM()),
        (diffusers.EulerDiscreteScheduler(), samplers.Euler()),
        (diffusers.EulerDiscreteScheduler(timestep_spacing="leading", steps_offset=1), samplers.Euler()),
        (diffusers.DPMSolverMultistepScheduler(), dpm_solver.DPMSolverPP2M()),
    ],
    ids=["ddim", "euler", "euler_leading", "dpmpp_2m"],
)
def test_diffusekit_samplers_on_a_wrapped_model_match_diffusers(unet, scheduler, sampler):
    steps = 10
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = _their_loop(unet, scheduler, steps, x)
        grid = DiffusersTimesteps.from_scheduler(scheduler, steps)
        # the same start: diffusers' Euler samples x/alpha (the sigma~ form), diffusekit keeps the VP form
        first = float(scheduler.sigmas[0]) if float(scheduler.init_noise_sigma) != 1.0 else 0.0
        start = x * scheduler.init_noise_sigma / (1.0 + first**2) ** 0.5
        ours = sampler.sample(denoiser(unet, scheduler), start, grid)
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-6 * max(scale, 1.0))


def test_a_text_conditioned_unet_reads_an_embedding_condition():
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12,
        norm_num_groups=4,
        attention_head_dim=4,
    ).eval()
    x, states = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 12)
    den = denoiser(model, diffusers.DDIMScheduler(clip_sample=False))
    with torch.no_grad():
        eps = den(x, torch.tensor(0.5, dtype=torch.float64), dk.Embedding(states)).eps
        reference = model(x, torch.tensor([499.0, 499.0]), encoder_hidden_states=states).sample
        other = den(x, torch.tensor(0.5, dtype=torch.float64), dk.Embedding(torch.randn(2, 5, 12))).eps
    torch.testing.assert_close(eps, reference)
    assert not torch.allclose(eps, other)  # the condition reaches the model


def test_a_dit_with_class_labels_per_sample_times_and_a_learned_variance():
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=8,  # eps and a learned variance
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
        norm_num_groups=4,
    ).eval()
    x = torch.randn(2, 4, 8, 8)
    den = denoiser(model, diffusers.DDIMScheduler(clip_sample=False))
    labels = dk.ClassLabel(torch.tensor([3, -1]), num_classes=10)  # -1: the null class, DiT's index 10
    with torch.no_grad():
        eps = den(x, torch.tensor([0.25, 0.75], dtype=torch.float64), labels).eps
        reference = model(x, torch.tensor([249.0, 749.0]), class_labels=torch.tensor([3, 10])).sample[:, :4]
    torch.testing.assert_close(eps, reference)


def test_per_pixel_time_is_a_clear_error(unet):
    den = denoiser(unet, diffusers.DDIMScheduler(clip_sample=False))
    with pytest.raises(ShapeError, match="one timestep per sample"):
        den(torch.randn(SHAPE), torch.rand(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("spacing", ["linspace", "leading"])
def test_heun_in_a_pipeline_matches_diffusers_heun(unet, spacing):
    # two evaluations per step: the scheduler lists both, as diffusers' HeunDiscreteScheduler does
    reference = diffusers.HeunDiscreteScheduler(timestep_spacing=spacing)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = _their_loop(
            unet, reference, 6, x * (1.0 + float(reference.sigmas[0]) ** 2) ** 0.5 / reference.init_noise_sigma
        )
    ours = DiffusekitScheduler.from_scheduler(reference, "gaussian:heun")
    ours.set_timesteps(6)
    reference.set_timesteps(6)
    assert ours.timesteps.tolist() == pytest.approx(reference.timesteps.tolist(), abs=1e-3)
    pipe = diffusers.DDPMPipeline(unet, ours)
    torch.testing.assert_close(images(pipe, 6), (theirs / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1), rtol=0, atol=1e-5)


def test_a_pipeline_that_stops_early_can_start_again(unet):
    ours = DiffusekitScheduler.from_scheduler(diffusers.DDPMScheduler(), "gaussian:heun")
    ours.set_timesteps(4)
    sample = torch.randn(SHAPE)
    with torch.no_grad():
        for t in ours.timesteps[:3]:  # abandoned half-way
            sample = ours.step(unet(sample, t).sample, t, sample).prev_sample
    first = images(diffusers.DDPMPipeline(unet, ours), 4)
    again = images(diffusers.DDPMPipeline(unet, ours), 4)
    torch.testing.assert_close(first, again, rtol=0, atol=0)


def test_a_sampler_that_picks_its_steps_as_it_goes_is_refused_with_the_way_out(monkeypatch):
    ignored = []  # a refused scheduler is collected without an error in its __del__
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    with pytest.raises(ShapeError, match="chooses its evaluations as it goes.*denoiser"):
        DiffusekitScheduler.from_scheduler(diffusers.DDIMScheduler(), "gaussian:adaptive")
    gc.collect()
    assert ignored == []


def test_an_unknown_sampler_names_itself():
    with pytest.raises(dk.ConfigError, match="unknown sampler .gaussian:no_such_sampler"):
        DiffusekitScheduler.from_scheduler(diffusers.DDIMScheduler(), "gaussian:no_such_sampler")


def test_clipping_with_the_unclipped_noise_is_refused(unet):
    pipe = diffusers.DDIMPipeline(unet, diffusers.DDIMScheduler(clip_sample=True))
    pipe.scheduler = DiffusekitScheduler.from_scheduler(pipe.scheduler, "gaussian:ddim")
    with pytest.raises(ShapeError, match="use_clipped_model_output=True"):
        images(pipe, 4, use_clipped_model_output=False)


def test_add_noise_is_the_forward_process_of_diffusers():
    reference = diffusers.DDPMScheduler()
    ours = DiffusekitScheduler.from_scheduler(reference, "gaussian:ddim")
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([10, 900])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), reference.add_noise(x0, noise, t))
