# The two commands of the README. `make demo` installs and runs the main job on DermSynth;
# `make test` installs and runs the test suite (CI runs exactly this).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Where the demo writes; benchmarks/bench_demo.py points them at a temporary folder to time a cold demo.
DEMO_RESULTS ?= results/dermsynth
DEMO_OUT     ?= leaderboards/dermsynth
# Idle OpenMP threads sleep instead of spinning: on a small shared CPU machine the spinning threads
# take the cores from the work (a linear head: 10x the CPU time); numbers do not change. An
# OMP_WAIT_POLICY set in the environment wins.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.PHONY: demo test install clean

install: $(STAMP)

# torch and torchvision go first and pinned: unpinned, pip would pull a multi-GB build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/dermbench run --model dermino-tiny,random-vit --task all --jobs auto --quiet --set seg-upernet.save_masks=true --results $(DEMO_RESULTS)
	$(BIN)/dermbench run --model dermino-tiny,random-vit --task ph2-cls,ddi --jobs auto --protocol robustness --quiet --results $(DEMO_RESULTS)
	$(BIN)/dermbench run --model dermino-tiny,random-vit --task all --jobs auto --protocol transfer --quiet --results $(DEMO_RESULTS)
	$(BIN)/dermbench leaderboard --results $(DEMO_RESULTS) --format all --out $(DEMO_OUT)
	$(BIN)/dermbench paper --results $(DEMO_RESULTS) --out $(DEMO_OUT)/paper --leaderboard $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache
