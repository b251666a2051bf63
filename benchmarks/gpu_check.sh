#!/usr/bin/env bash
# The GPU check of dsol_lite: one script, sized for about 7 minutes on one H100/H200-class GPU (an estimate), no network.
#
# Prints every figure of the GPU targets, each with the GPU's name:
#   1. `dsol-lite run --preset quick --device cuda` end to end, world generation included (target <= 90 s);
#   2. benchmarks/gpu_throughput.py on the quick world: model-only vs whole-trainer clips/s, both stages;
#   3. the full world (`dsol-lite synth --preset full`), timed;
#   4. benchmarks/gpu_throughput.py on the full world, then stage one's fit for 2 epochs with the GPU's
#      busy fraction (targets: whole trainer >= 0.8 x model only; GPU busy >= 80 %);
#   5. a shortened `dsol-lite run --preset full` end to end (2 + 2 epochs, no ImageNet download).
# Copy the output into benchmarks/RESULTS.md.
#
# What a bare CUDA image needs: torch, torchvision and torchaudio (CUDA builds), numpy, scipy, scikit-learn,
# matplotlib, pandas, pillow and tqdm, which such images ship, plus soundfile and the cffi and pycparser it
# loads with, which they often lack. Put those three wheels for the machine's Python into .gpu-wheels/ of the
# checkout before copying it there, e.g. on a machine with network (Python 3.12, x86_64):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --dest .gpu-wheels soundfile cffi pycparser
# They are installed with --no-deps into .gpu-deps/, and the project runs from its source tree (no
# `pip install -e .`: it would try to resolve the dependencies online).
#
# Usage: bash benchmarks/gpu_check.sh     (WORK=folder for worlds and runs, default /tmp/dsol-gpu-check;
#        DEVICE=cpu SMOKE=1 runs the same steps on the tiny world, to check the script itself)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/dsol-gpu-check}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

if ! "$python" -c "import soundfile" 2>/dev/null; then
  if ! ls "$repo"/.gpu-wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_check: soundfile is missing and $repo/.gpu-wheels/ holds no wheels (see this script's header)" >&2
    exit 1
  fi
  "$python" -m pip install --quiet --no-deps --no-index --target "$repo/.gpu-deps" "$repo"/.gpu-wheels/*.whl
  export PYTHONPATH="$repo/.gpu-deps:$PYTHONPATH"
fi
"$python" -c "import soundfile, torch, torchaudio, torchvision, sklearn, scipy, matplotlib, pandas, tqdm" || {
  echo "gpu_check: a required package does not import (see above and this script's header)" >&2; exit 1; }

cli() { "$python" -m dsol_lite.cli "$@"; }
stamp() { date +%s.%N; }
took() { "$python" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(stamp)"; }

echo "== machine"
"$python" - "$device" <<'EOF'
import sys, torch
device = torch.device(sys.argv[1])
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
print(f"device {device}: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 {device.type == 'cuda' and torch.cuda.is_bf16_supported()}, {torch.get_num_threads()} CPU threads")
EOF
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi

rm -rf "$work" && mkdir -p "$work" && cd "$work"
if [ -n "${SMOKE:-}" ]; then  # the script's own check: the tiny world, tiny networks
  quick_world=worlds/tiny
  cli synth --preset tiny --out "$quick_world" --no-progress >/dev/null
  tiny=(--set stage_one.width=8 --set stage_one.image_size=64 --set stage_one.eval_size=none --set stage_one.epochs=2
        --set stage_one.batch_size=8 --set stage_two.batch_size=8 --set stage_two.epochs=2 --set stage_two.eval_size=none)
  echo "== 1. quick run end to end (smoke: the tiny world)"
  t=$(stamp); cli run --world "$quick_world" --device "$device" --no-progress "${tiny[@]}" | tail -n 2
  echo "quick run, world included: $(took "$t")"
  echo "== 2. throughput, quick preset"
  "$python" "$repo/benchmarks/gpu_throughput.py" --world "$quick_world" --preset quick --device "$device" --repeats 2 \
    --batch 8 --fit-epochs 1
  echo "== done (smoke)"
  exit 0
fi

echo "== 1. dsol-lite run --preset quick --device $device, world generation included"
t=$(stamp); cli run --preset quick --device "$device" --no-progress | tail -n 2
echo "quick run end to end: $(took "$t")"

echo "== 2. throughput, quick preset"
"$python" "$repo/benchmarks/gpu_throughput.py" --world worlds/quick --preset quick --device "$device"

echo "== 3. the full world"
t=$(stamp); cli synth --preset full --out worlds/full --no-progress | head -n 1
echo "full world: $(took "$t")"

echo "== 4. throughput, full preset, and stage one's fit for 2 epochs"
"$python" "$repo/benchmarks/gpu_throughput.py" --world worlds/full --preset full --device "$device" --fit-epochs 2

echo "== 5. dsol-lite run --preset full, shortened (2 + 2 epochs, no ImageNet weights)"
t=$(stamp)
cli run --preset full --device "$device" --no-progress --set stage_one.imagenet=false --set stage_one.epochs=2 \
  --set stage_two.epochs=2 --set stage_two.warmup_epochs=1 | tail -n 2
echo "shortened full run (world made in step 3): $(took "$t")"
echo "== done"
