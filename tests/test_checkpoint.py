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


def _with_header_length(raw: bytes, length: int) -> bytes:
    """The same safetensors file with its JSON header padded by spaces to ``length`` bytes."""
    import struct

    (size,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + size].rstrip(b" ")
    assert length >= len(header)
    return struct.pack("<Q", length) + header + b" " * (length - len(header)) + raw[8 + size :]


def test_checkpoints_load_whatever_their_header_length_mod_256(tmp_path):
    # the first byte of a safetensors file is the header length mod 256; 0x80 is also how a
    # pickle starts, and used to be refused as one (about 1 checkpoint in 32)
    import struct

    path = tmp_path / "model.safetensors"
    tensors = {"model.weight": torch.randn(10, 10), "model.bias": torch.randn(10)}
    save_checkpoint(path, tensors, RECIPE, step=5)
    raw = path.read_bytes()
    (natural,) = struct.unpack("<Q", raw[:8])
    firsts = set()
    for residue in range(256):
        length = natural + (residue - natural) % 256
        path.write_bytes(_with_header_length(raw, length))
        firsts.add(path.read_bytes()[0])
        loaded = load_checkpoint(path)
        assert loaded.step == 5 and loaded.recipe == RECIPE
        assert torch.equal(loaded.tensors["model.weight"], tensors["model.weight"])
    assert firsts == set(range(256))


def test_checkpoints_written_by_safetensors_padding_load(tmp_path):
    # safetensors pads its header to a multiple of 8: metadata of growing length walks
    # the header length through all 32 residues mod 256 that real files have
    import struct

    seen = set()
    for n in range(0, 264, 4):
        path = tmp_path / f"m{n}.safetensors"
        save_checkpoint(path, {"model.w": torch.ones(3)}, RECIPE, extra={"note": "x" * n})
        seen.add(struct.unpack("<Q", path.read_bytes()[:8])[0] % 256)
        assert load_checkpoint(path).tensors["model.w"].sum() == 3
    assert 128 in seen and len(seen) == 32


@pytest.mark.parametrize(
    "metadata", [["a", "list"], {"diffusekit.format": 3}, "text", {"k": {"nested": "x"}}], ids=repr
)
def test_metadata_of_the_wrong_type_is_a_clean_error(tmp_path, metadata):
    import struct

    header = json.dumps({"__metadata__": metadata, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 4)
    with pytest.raises(CheckpointError, match="malformed safetensors metadata"):
        load_checkpoint(path)


def test_a_header_that_is_not_an_object_or_a_bad_recipe_is_a_clean_error(tmp_path):
    import struct

    path = tmp_path / "list.safetensors"
    header = b"[1, 2]"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, {"model.w": torch.ones(1)}, RECIPE, extra={"diffusekit.recipe": "{not json"})
    with pytest.raises(CheckpointError, match="malformed diffusekit metadata"):
        load_checkpoint(bad)


def test_legacy_torch_pickles_are_still_refused(tmp_path):
    path = tmp_path / "legacy.safetensors"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_a_checkpoint_at_a_path_that_is_not_utf8_reads_back(tmp_path):
    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")
    path = os.path.join(folder, "model.safetensors")
    save_checkpoint(path, {"model.w": torch.arange(3.0)}, RECIPE, step=2)
    assert torch.equal(load_checkpoint(path).tensors["model.w"], torch.arange(3.0))
