#!/usr/bin/env bash
# A normal (non-editable) install: build the wheel, install it into a fresh virtualenv, and run one
# task from outside the source tree, so task cards, weights and DermSynth must all come from the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel --no-deps --quiet -w "$work/dist" .
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/dermbench-*.whl
cd "$work"
export DERMBENCH_CACHE="$work/cache" HF_HUB_OFFLINE=1
"$work/venv/bin/dermbench" --version
test "$("$work/venv/bin/dermbench" list tasks | wc -l)" -ge 21
"$work/venv/bin/dermbench" run --model random-vit --task ddi --protocol retrieval --synth-scale 0.25 --n-boot 50 \
    --quiet --results "$work/results"
ls "$work"/results/random-vit/ddi/ >/dev/null
# no git checkout here: the result's provenance names the package version and the installed sources' hash
grep -q '"source_sha256": "[0-9a-f]\{64\}"' "$work"/results/random-vit/ddi/retrieval@*.json
echo "wheel check: installed from the wheel, listed the task cards and ran ddi outside the source tree"
