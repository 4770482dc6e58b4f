#!/usr/bin/env sh
# How the shipped digits weights were made (run from the repository root, after `make install`):
# train the method's recipe, then export the EMA weights as float16, sampling-only.
set -eu
.venv/bin/diffusekit train gaussian:digits --out outputs/train/digits.safetensors
.venv/bin/diffusekit export outputs/train/digits.safetensors --half \
    --out plugins/gaussian/src/diffusekit_gaussian/weights/digits.safetensors
