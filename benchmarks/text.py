"""Benchmark 6: held-out bits per character of the shipped masked:text model.

The ELBO of masked diffusion bounds the negative log-likelihood (Sahoo et al., 2024,
eq. 10); :func:`diffusekit_masked.text.bits_per_character` estimates it by stratified
Monte Carlo over t (``--times`` draws per sequence). Reported for the three held-out
plays (Hamlet, Macbeth, The Tempest, non-overlapping 128-character chunks) and, for
reference, on as many training chunks, beside the unigram entropy of the training text
(what a model that ignores context can reach). Samples are drawn with the first-hitting
sampler and written out.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text.py [--times 16] [--checkpoint FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import diffusekit as dk
import torch
from common import environment
from diffusekit.data import Data
from diffusekit_masked.text import MASK, Shakespeare, bits_per_character, decode, encode, texts


def unigram_bits() -> float:
    ids = torch.tensor(encode("\n\n".join(texts("train"))))
    p = torch.bincount(ids, minlength=MASK).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--json", type=str, default=None)
    parser.add_argument("--checkpoint", type=str, default=None, help="other weights than the shipped ones")
    args = parser.parse_args()
    print(environment())
    pipeline = dk.load(args.checkpoint) if args.checkpoint else dk.pretrained("masked:text")
    test = Shakespeare(split="test").load()
    n = len(test.parts["x"])
    train_all = Shakespeare(split="train").load().parts["x"]
    pick = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(0))[:n]
    train = Data({"x": train_all[pick]})
    result = {"unigram_bits": unigram_bits(), "test_chunks": n, "times": args.times}
    print(
        f"unigram entropy of the training text: {result['unigram_bits']:.3f} bits/char (log2 96 = {math.log2(96):.3f})"
    )
    for name, data in (("held-out", test), ("train", train)):
        start = time.perf_counter()
        bpc = bits_per_character(pipeline, data, times=args.times)
        result[f"{name}_bpc"] = bpc
        print(
            f"{name:9s} ELBO {bpc:.3f} bits/char  ({n} chunks of 128, {time.perf_counter() - start:.0f} s)", flush=True
        )
    with torch.no_grad():
        out = pipeline.sampler.sample(
            pipeline.denoiser, (args.samples, 128), pipeline.grid, generator=torch.Generator().manual_seed(0)
        )
    result["samples"] = [decode(s.tolist()) for s in out]
    for s in result["samples"]:
        print("----\n" + s)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(), **result}, f, indent=1)


if __name__ == "__main__":
    main()
