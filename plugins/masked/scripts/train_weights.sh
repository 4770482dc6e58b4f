#!/usr/bin/env sh
# How the shipped masked weights were made (run from the repository root, after `make install`):
# train each method's recipe on one CPU thread, then export the EMA weights as float16,
# sampling-only. Sudoku: 16,000 steps, about 65 minutes; text: 10,000 steps, about 55 minutes
# (2-core machine, the two runs side by side).
set -eu
export OMP_NUM_THREADS=1
for method in sudoku text; do
    .venv/bin/diffusekit train "masked:$method" --out "outputs/train/$method.safetensors" --no-progress
    .venv/bin/diffusekit export "outputs/train/$method.safetensors" --half \
        --out "plugins/masked/src/diffusekit_masked/weights/$method.safetensors"
done
