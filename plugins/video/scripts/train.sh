#!/usr/bin/env sh
# How the shipped video weights are made (run from the repository root, after `make install`):
# train each method's recipe on CPU, one thread each, both at once on 2 cores (8,500 steps of
# batch 8, about 0.7 s a step on a free core: about 1 hour 45 minutes), then export the EMA weights as
# float16, sampling-only. The learning rate is constant after warm-up, so a run stopped at a
# checkpoint and resumed with --resume is the same training.
# Check the result: diffusekit run video:bouncing --out out/balls (and look at contact_sheet.png),
# and the numbers: cd benchmarks && ../.venv/bin/python video.py tasks
set -eu
for method in bouncing moving-digits; do
    OMP_NUM_THREADS=1 .venv/bin/diffusekit train "video:$method" --out "outputs/train/$method.safetensors" --no-progress &
done
wait
for method in bouncing moving-digits; do
    .venv/bin/diffusekit export "outputs/train/$method.safetensors" --half \
        --out "plugins/video/src/diffusekit_video/weights/$(echo "$method" | tr - _).safetensors"
done
