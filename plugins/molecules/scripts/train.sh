#!/usr/bin/env sh
# How the shipped QM9 weights are made (run from the repository root, after `make test` has
# installed the molecules plugin): train molecules:qm9's recipe on CPU (2 threads; EGNN width 128,
# 9 layers, batch 64 of similar-size molecules: about 0.55 s a step on 2 free cores), then export
# the EMA weights as float16, sampling-only. The learning rate is constant after warm-up, so a run
# stopped at a checkpoint and resumed (RESUME=1, STEPS=more) is the same training.
# Check the result: diffusekit run molecules:qm9 --num 64 --out out/qm9 (look at molecules.png and
# report.json), and the numbers: .venv/bin/python benchmarks/molecules.py quality
set -eu
out=${1:-outputs/train/qm9.safetensors}
steps=${STEPS:-}
OMP_NUM_THREADS=2 .venv/bin/diffusekit train molecules:qm9 --out "$out" --no-progress ${steps:+--set train.steps=$steps} ${RESUME:+--resume}
.venv/bin/diffusekit export "$out" --half --out plugins/molecules/src/diffusekit_molecules/weights/qm9.safetensors

# molecules:qm9-cond fine-tunes those weights (EMA, before export) on the training split's second
# half with α as a further input feature (`--init`: the new input columns start at zero, so the
# run starts from the unconditional model), and the α regressor learns on the first half.
if [ -n "${COND:-}" ]; then
  cond=${out%.safetensors}_cond.safetensors
  OMP_NUM_THREADS=2 .venv/bin/diffusekit train molecules:qm9-cond --init "$out" --out "$cond" --no-progress
  .venv/bin/diffusekit export "$cond" --half --out plugins/molecules/src/diffusekit_molecules/weights/qm9_cond.safetensors
  .venv/bin/diffusekit train-property-regressor alpha --steps 2000 --out plugins/molecules/src/diffusekit_molecules/weights/alpha_regressor.safetensors
fi

# molecules:qm9-cond-gap and its regressor: the same for the HOMO-LUMO gap (GAP=1).
if [ -n "${GAP:-}" ]; then
  gap=${out%.safetensors}_cond_gap.safetensors
  OMP_NUM_THREADS=2 .venv/bin/diffusekit train molecules:qm9-cond-gap --init "$out" --out "$gap" --no-progress
  .venv/bin/diffusekit export "$gap" --half --out plugins/molecules/src/diffusekit_molecules/weights/qm9_cond_gap.safetensors
  .venv/bin/diffusekit train-property-regressor gap --steps 2000 --out plugins/molecules/src/diffusekit_molecules/weights/gap_regressor.safetensors
fi
