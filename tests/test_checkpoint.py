"""Checkpoints: safetensors only, recipe in the metadata, atomic writes, pickle refused."""

import json
import os

import diffusekit.checkpoint as ckpt_module
import pytest
import torch
from diffusekit import CheckpointError, load_checkpoint, save_checkpoint
from diffusekit.recipe import loads_toml

RECIPE = loads_toml("""
[parts.x]
shape = [2]
schedule = "gaussian:vp_cosine"
parameterization = "gaussian:eps"
[network]
name = "gaussian:mlp"
[sampler]
name = "gaussian:ddim"
[grid]
name = "gaussian:karras"
""")


def test_round_trip_carries_recipe_versions_and_step(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = {"model.w": torch.randn(3, 4), "ema.w": torch.randn(3, 4)}
    save_checkpoint(path, tensors, RECIPE, step=17)
    loaded = load_checkpoint(path)
    assert loaded.recipe == RECIPE and loaded.step == 17
    assert torch.equal(loaded.tensors["model.w"], tensors["model.w"])
    assert set(loaded.weights()) == {"w"} and torch.equal(loaded.weights()["w"], tensors["ema.w"])
    assert loaded.versions["torch"] == torch.__version__ and "diffusekit-gaussian" in loaded.versions
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_crash_during_a_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"model.w": torch.ones(2)}, RECIPE, step=1)
    before = path.read_bytes()

    def crash(fd):  # the bytes are written but never made durable
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model.w": torch.zeros(2)}, RECIPE, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary left behind
    assert load_checkpoint(path).step == 1


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".ckpt", ".bin"])
def test_pickle_suffixes_are_refused_without_reading(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not read")
    with pytest.raises(CheckpointError, match="refusing to load a pickle"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="safetensors"):
        save_checkpoint(path, {"w": torch.ones(1)}, RECIPE)


def test_a_pickle_renamed_to_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_foreign_and_broken_files(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a diffusekit checkpoint"):
        load_checkpoint(foreign)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"0123456789abcdef")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_metadata_is_plain_json_readable_by_other_tools(tmp_path):
    import struct

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"model.w": torch.ones(1)}, RECIPE, step=3)
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + size])["__metadata__"]
    assert json.loads(meta["diffusekit.recipe"])["network"]["name"] == "gaussian:mlp"
    assert meta["diffusekit.step"] == "3"
