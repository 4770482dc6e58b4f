#!/usr/bin/env sh
# How the shipped QM9 weights are made (run from the repository root, after `make test` has
# installed the molecules plugin): train molecules:qm9's recipe on CPU (2 threads; EGNN width 128,
# 9 layers, batch 64 of similar-size molecules), then export the last stage's EMA weights as
# float16, sampling-only. The recipe trains in three stages: 7,000 steps at a constant learning
# rate (kept as ${out%.safetensors}.stage1.safetensors), then 4,000 steps from their EMA weights
# with the rate decaying to 1e-5 on a cosine (kept as .stage2), then 2,500 more with the cosine
# restarted at 1e-4. The first stage took 0.55 s a step on 2 cores, the second 1.3 s, the third
# 2.0 s on one core, measured in different sessions. A killed run continues with RESUME=1.
# Check the result: diffusekit run molecules:qm9 --num 64 --out out/qm9 (look at molecules.png and
# report.json), and the numbers: .venv/bin/python benchmarks/molecules.py quality
set -eu
out=${1:-outputs/train/qm9.safetensors}
OMP_NUM_THREADS=2 .venv/bin/diffusekit train molecules:qm9 --out "$out" --no-progress ${RESUME:+--resume}
.venv/bin/diffusekit export "$out" --half --out plugins/molecules/src/diffusekit_molecules/weights/qm9.safetensors

# molecules:qm9-cond fine-tunes the first stage's weights (EMA) on the training split's second
# half with α as a further input feature (`--init`: the new input columns start at zero, so the
# run starts from the unconditional model), and the α regressor learns on the first half.
stage1=${out%.safetensors}.stage1.safetensors
if [ -n "${COND:-}" ]; then
  cond=${out%.safetensors}_cond.safetensors
  OMP_NUM_THREADS=2 .venv/bin/diffusekit train molecules:qm9-cond --init "$stage1" --out "$cond" --no-progress
  .venv/bin/diffusekit export "$cond" --half --out plugins/molecules/src/diffusekit_molecules/weights/qm9_cond.safetensors
  .venv/bin/diffusekit train-property-regressor alpha --steps 2000 --out plugins/molecules/src/diffusekit_molecules/weights/alpha_regressor.safetensors
fi

# molecules:qm9-cond-gap and its regressor: the same for the HOMO-LUMO gap (GAP=1).
if [ -n "${GAP:-}" ]; then
  gap=${out%.safetensors}_cond_gap.safetensors
  OMP_NUM_THREADS=2 .venv/bin/diffusekit train molecules:qm9-cond-gap --init "$stage1" --out "$gap" --no-progress
  .venv/bin/diffusekit export "$gap" --half --out plugins/molecules/src/diffusekit_molecules/weights/qm9_cond_gap.safetensors
  .venv/bin/diffusekit train-property-regressor gap --steps 2000 --out plugins/molecules/src/diffusekit_molecules/weights/gap_regressor.safetensors
fi
