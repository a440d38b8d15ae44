#!/usr/bin/env bash
# One check of dermbench on a CUDA machine, in at most about 8 minutes; prints one summary table.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (PYTHON=python, WORKERS=min(cores,16) may be set)
#
# 1. ISIC-like 1024x768 JPEGs from DermSynth (`dermbench data synth --image-size 1024x768`).
# 2. The extraction benchmark (bench_extraction.py) for ViT-B/14 (dinov2 architecture, random init)
#    at 224 px in bf16 and in fp32: img/s of decode, forward, reference loop, dermbench cold/warm.
# 3. `dermbench run --device cuda` on DermSynth for two backbones (dermino-tiny, random-vit), on a
#    classification and a segmentation task (heads trained on the GPU), with --precision bf16 and fp32.
# 4. fp32 vs bf16 agreement: cosine of ViT-B/14 features of the same images, and the difference of
#    the main metrics of the two runs of step 3.
# 5. 2-process torchrun DermINO pretraining (tiny preset, a few iterations) when 2 GPUs are present.
# Each step has its own time limit, cut so that the whole stays within BUDGET_S (480) seconds; a
# failed or timed-out step is reported in the table and the script goes on, exiting non-zero at the
# end if any step failed. Logs: OUT_DIR/<step>.log.
set -euo pipefail

PY=${PYTHON:-python}
OUT=${1:-$(mktemp -d -t dermbench-gpu-check-XXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DERMBENCH_CACHE="$OUT/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
CORES=$(nproc)
WORKERS=${WORKERS:-$(( CORES < 16 ? CORES : 16 ))}
DB=("$PY" -c "import sys; from dermbench.cli import main; sys.argv[0] = 'dermbench'; main()")
SUMMARY="$OUT/summary.tsv"
printf 'step\tstatus\tseconds\tresult\n' > "$SUMMARY"
FAILED=0
T0=$(date +%s)

BUDGET_S=${BUDGET_S:-480}

# step NAME LIMIT_S CMD...: run CMD under a time limit (cut to what is left of the budget), log to
# OUT/NAME.log, one summary row.
step() {
  local name=$1 limit=$2 start status rc left
  shift 2
  start=$(date +%s)
  left=$(( BUDGET_S - (start - T0) ))
  if [ "$left" -lt 10 ]; then
    printf '%s\t%s\t0\t%s\n' "$name" "skipped" "the ${BUDGET_S}-s budget is spent" >> "$SUMMARY"
    FAILED=1; RESULT=""
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left
  set +e
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then status=ok
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="timeout(${limit}s)"; FAILED=1
  else status="failed(rc=$rc)"; FAILED=1
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" "${RESULT:-}" >> "$SUMMARY"
  RESULT=""
  return 0
}

# one line of a bench_extraction log: "(d) dermbench cold : 123.4 img/s" -> 123.4
rate() { grep -E "^\($2\)" "$OUT/$1.log" 2>/dev/null | awk '{print $(NF-1)}' || true; }
ratio() { grep -E "^$2" "$OUT/$1.log" 2>/dev/null | awk '{print $NF}' || true; }

RESULT="$("$PY" -c 'import torch; print(torch.cuda.device_count(), "x", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")' 2>&1 | tail -1 || true)"
step cuda 30 "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)

step synth-1024x768 90 "${DB[@]}" data synth --out "$OUT/isic1024" --image-size 1024x768 --dataset isic2018 --scale 2

for prec in bf16 fp32; do
  step "extract-vitb14-$prec" 60 "$PY" "$HERE/benchmarks/bench_extraction.py" --images "$OUT/isic1024" --n 96 \
    --model dinov2 --weights random --device cuda --precision "$prec" --workers "$WORKERS" --batch 64
  name="extract-vitb14-$prec"
  sed -i "\$s|\t\$|\ta=$(rate "$name" a) b=$(rate "$name" b) c=$(rate "$name" c) d=$(rate "$name" d) e=$(rate "$name" e) img/s; d/min(a,b)=$(ratio "$name" 'd / min') d/c=$(ratio "$name" 'd / c')|" "$SUMMARY"
done

# two backbones on the GPU, a classification and a segmentation task, in bf16 (the CUDA default) and fp32
for prec in bf16 fp32; do
  step "run-cuda-two-backbones-$prec" 120 "${DB[@]}" run -m dermino-tiny,random-vit -t ddi,isic2018 \
    --device cuda --precision "$prec" --workers "$WORKERS" --n-boot 200 --quiet --results "$OUT/results-$prec"
  RESULT="$(grep -E 'result\(s\) computed' "$OUT/run-cuda-two-backbones-$prec.log" 2>/dev/null | tail -1 || true)"
  sed -i "\$s|\t\$|\t$RESULT|" "$SUMMARY"
  RESULT=""
done

cat > "$OUT/agreement.py" <<'EOF'
import json, sys
from pathlib import Path

import numpy as np

from dermbench.data.sample import Sample
from dermbench.features import FeatureCache
from dermbench.models import registry

out = Path(sys.argv[1])
images = sorted(p for p in (out / "isic1024").rglob("*.jpg"))[:64]
samples = [Sample(id=str(i), image=p) for i, p in enumerate(images)]
backbone = registry.build("dinov2", weights="random")
feats = {p: FeatureCache(out / "cache", precision=p).get(backbone, samples, device="cuda", batch_size=64)
         for p in ("fp32", "bf16")}
a, b = feats["fp32"], feats["bf16"]
cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
deltas = []
for f in sorted((out / "results-fp32").glob("*/*/*.json")):
    g = out / "results-bf16" / f.relative_to(out / "results-fp32")
    if g.exists():
        r32, r16 = json.loads(f.read_text()), json.loads(g.read_text())
        m = r32["main_metric"] if r32["main_metric"] in r32["metrics"] else next(iter(r32["metrics"]))
        deltas.append(f"{r32['task']}/{r32['protocol']} {m} {100 * (r16['metrics'][m]['value'] - r32['metrics'][m]['value']):+.2f}pt")
print(f"ViT-B/14 feature cosine fp32-vs-bf16 min {cos.min():.5f} mean {cos.mean():.5f}; bf16-fp32 metric: {'; '.join(deltas) or 'no runs'}")
EOF
step fp32-vs-bf16 45 "$PY" "$OUT/agreement.py" "$OUT"
sed -i "\$s|\t\$|\t$(tail -1 "$OUT/fp32-vs-bf16.log" 2>/dev/null | tr '|' '/' || true)|" "$SUMMARY"

if [ "$GPUS" -ge 2 ]; then
  step torchrun-2gpu-pretrain 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m dermino.pretrain \
    --preset tiny --out "$OUT/pretrain" --device cuda --stop-at 20 --epoch-length 20 --workers 2
else
  RESULT="skipped: $GPUS GPU(s)"
  printf 'torchrun-2gpu-pretrain\tskipped\t0\t%s\n' "$RESULT" >> "$SUMMARY"
  RESULT=""
fi

echo
echo "dermbench GPU check: $(( $(date +%s) - T0 )) s in all; logs in $OUT"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
exit "$FAILED"
