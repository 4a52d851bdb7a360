# pdeserve: `make serve` and `make test` are the two set-up commands (they create .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GRPC_PORT ?= 9000
# The CPU build of torch this kind of machine has on disk; installed before the rest so that pip never
# resolves torch to a multi-GB CUDA wheel. GPU machines: `make install TORCH_SPEC=torch` (any CUDA build).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install serve test lint format protos helm-config bench bench-accuracy bench-refine bench-payoff bench-routing bundled-model bundled-ns-model bundled-allen-cahn-model bundled-models clean

$(STAMP): pyproject.toml constraints.txt examples/allen-cahn/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -m pip install --quiet -c constraints.txt -e examples/allen-cahn
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/pdeserve serve --repo models --grpc-port $(GRPC_PORT)

# Two pytest-xdist workers; the tests of one group run on one worker (tests/conftest.py groups the tests
# that share the session's Ray Serve instance or another fixture, and gives each worker's torch one
# thread). PYTEST_ARGS='-n 0' runs them in one process.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pdeserve.protos.generate --check

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) bench/serving.py
	$(PY) bench/datagen.py
	$(PY) bench/training.py
	$(PY) bench/operators.py

# All registered operators on the same small Darcy and Burgers data, 120 s of training each (~20 min).
bench-accuracy: $(STAMP)
	$(PY) bench/accuracy.py

# Warm-starting Krylov solvers from a surrogate's answer vs from zero vs the direct solve (~1 min).
bench-refine: $(STAMP)
	$(PY) bench/refine.py

# Surrogate vs the best classical solver at equal accuracy, per family (~15 min; --quick < 1 min).
bench-payoff: $(STAMP)
	nice -n 10 $(PY) bench/payoff.py

# Requests that state max_error: the router's answers against their true errors, and its cost against
# always the surrogate (refined where its estimate misses) and an oracle's classical path, in process and
# through gRPC (~10 min; --quick, in process only, < 1 min).
bench-routing: $(STAMP)
	nice -n 10 $(PY) bench/routing.py

protos: $(STAMP)
	$(PY) -m pdeserve.protos.generate

# The Helm chart's Serve config, generated from pdeserve.serving.serve_config (a test fails when stale).
helm-config: $(STAMP)
	$(VENV)/bin/pdeserve serve-config --helm --out helm/pdeserve/files/serve-config.yaml

# The bundled default model (models/darcy-fno), exactly as published in the repository.
bundled-model: $(STAMP)
	$(VENV)/bin/pdeserve datagen darcy --n 1100 --resolution 64 --seed 0 --overwrite --out data/darcy64.h5
	$(VENV)/bin/pdeserve train --data data/darcy64.h5 --model fno --repo models --name darcy-fno --epochs 40 --seed 0
	$(VENV)/bin/pdeserve models validate darcy-fno --repo models

# The bundled Navier-Stokes model (models/ns-fno): vorticity on the unit torus, nu = 1e-3, 64x64, the FNO
# paper's next-state map from 10 states; the time step is the largest the solver accepts for T = 10.
bundled-ns-model: $(STAMP)
	$(VENV)/bin/pdeserve datagen navier-stokes --n 192 --resolution 64 --final-time 10 --record-every 1 \
		--time-step 0.0033 --seed 0 --chunk-size 16 --overwrite --out data/ns64.h5
	$(VENV)/bin/pdeserve train --data data/ns64.h5 --model fno --repo models --name ns-fno \
		--input-steps 10 --output-steps 1 --arg hidden_channels=24 --arg 'n_modes=[16,16]' \
		--epochs 60 --batch-size 16 --seed 0 --validation-samples 0
	$(VENV)/bin/pdeserve models validate ns-fno --repo models

# The bundled Allen-Cahn model (models/allen-cahn-fno) of the example plugin family (examples/allen-cahn,
# installed by `make install`): u0 -> u(8) on 64 x 64 nodes, data solved on 127 x 127 (about an hour on a
# 2-core machine: 1024 samples, 40 epochs of about 25 s).
bundled-allen-cahn-model: $(STAMP)
	nice -n 10 $(VENV)/bin/pdeserve datagen allen-cahn --n 1024 --resolution 64 --seed 0 --overwrite \
		--out data/allen-cahn64.h5
	nice -n 10 $(VENV)/bin/pdeserve train --data data/allen-cahn64.h5 --model fno --repo models \
		--name allen-cahn-fno --arg hidden_channels=24 --arg 'n_modes=[16,16]' --epochs 40 --batch-size 16 \
		--seed 0 --validation-samples 0
	nice -n 10 $(VENV)/bin/pdeserve models validate allen-cahn-fno --repo models

bundled-models: bundled-model bundled-ns-model bundled-allen-cahn-model

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
