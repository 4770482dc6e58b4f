#!/usr/bin/env sh
# How the bouncing-balls weights are made (run from the repository root, after `make install`):
# train the method's recipe on CPU (about 0.55 s a step on 2 free cores, about 1 s on one busy core),
# then export the EMA weights as float16, sampling-only. The learning rate is constant after warm-up,
# so a run stopped at a checkpoint and resumed with --resume is the same training.
# Check the result with: .venv/bin/python plugins/video/scripts/eval_bouncing.py --sheet sheet.png
set -eu
OMP_NUM_THREADS=1 .venv/bin/diffusekit train video:bouncing --out outputs/train/bouncing.safetensors --no-progress
.venv/bin/diffusekit export outputs/train/bouncing.safetensors --half \
    --out plugins/video/src/diffusekit_video/weights/bouncing.safetensors
