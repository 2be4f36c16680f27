# The two commands: `make demo` (set up, build the embedded synthetic demo dataset, train a small FROM on it,
# evaluate it, draw what it made) and `make test` (set up, then run the test suite). Both work on a fresh machine
# with no data. `make lint` checks style, formatting and types (ruff, mypy; settings in pyproject.toml).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/occgen: setup.cfg setup.py pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,lint,align,onnx,dask]'
	touch $@

setup: $(BIN)/occgen

demo: setup
	$(BIN)/occgen build --src demo --scales 1:0.5:5 --copies 3 --clean-ratio 0.3333 --shard-size 128 --out out/shards --name occ-demo --K 5
	$(BIN)/occgen label --K 4 manifests/occ-demo
	rm -rf runs/demo
	$(BIN)/fromnet train --shards manifests/occ-demo --variant from --K 5 --backbone r18 --width-mult 0.25 \
		--batch-size 32 --epochs 2 --milestones 1 --workers 2 --log-every 2 --out runs/demo
	$(BIN)/occgen build --src demo --clean-ratio 1 --out out/shards --name demo-clean -q
	$(BIN)/fromnet eval --model runs/demo --gallery manifests/demo-clean --probes clean=manifests/demo-clean \
		--probes occluded=manifests/occ-demo --out runs/demo/eval -q
	$(BIN)/occgen preview manifests/occ-demo --boxes -n 16 --out runs/demo/preview > /dev/null
	@echo ""
	@echo "Pictures:"
	@echo "  the demo set (a contact sheet per scale, occluded boxes outlined): $$(ls runs/demo/preview/*.png | tr '\n' ' ')"
	@echo "  the training loss: runs/demo/loss.png"
	@echo "  the evaluation (rank-1 and rank-5 of clean and occluded probes): runs/demo/eval/identification.png"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out manifests/occ-demo* manifests/demo-clean runs/demo
