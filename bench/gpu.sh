#!/usr/bin/env bash
# The GPU numbers of issue 15 in one short run (under 5 minutes) on a machine with a GPU and JAX:
# installs magnb without TensorFlow into .venv-gpu (seeing the machine's own JAX and CUDA through
# --system-site-packages), builds a seed_base dataset (62 samples of 120^3 x 2) and prints
# seed_base's training samples/s on the GPU, the loader's samples/s and PeriodicConv3D's
# forward+backward time at 120^3 and 240^3 (bench/gpu.py). Copy the printed lines into
# bench/RESULTS.md ("gpu" section).
#
#   bash bench/gpu.sh             # on the GPU machine, from the checkout
#   bash bench/gpu.sh --dry-run   # on any machine, in the current env, tiny sizes, CPU is fine
#
# PYTHON picks the interpreter (default: python3); MAGNB_GPU_VENV the venv (default .venv-gpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu.sh [--dry-run]" >&2; exit 2 ;;
esac

python=${PYTHON:-python3}
if ((dry == 0)); then
  venv=${MAGNB_GPU_VENV:-.venv-gpu}
  [[ -x $venv/bin/python ]] || "$python" -m venv --system-site-packages "$venv"
  # magnb's own dependencies only: TensorFlow is an extra ([cpu], [gpu], [dev]) and stays out
  "$venv/bin/python" -m pip install --quiet -e . ||
    "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
  python=$venv/bin/python
  "$python" - <<'EOF'
import importlib.util, sys
import jax
if importlib.util.find_spec("tensorflow") is not None:
    print("gpu.sh: note: TensorFlow is importable here; the run uses KERAS_BACKEND=jax anyway")
if jax.default_backend() != "gpu":
    sys.exit(f"gpu.sh: JAX sees no GPU (default backend {jax.default_backend()}): install jax[cuda12]")
EOF
fi

export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false # the loader and the model share the machine
args=()
if ((dry)); then args+=(--dry-run); fi
exec timeout 290 "$python" bench/gpu.py "${args[@]}"
