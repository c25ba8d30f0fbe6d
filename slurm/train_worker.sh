#!/usr/bin/env bash
# One TensorFlow worker of slurm/train_multinode.sbatch (run by its srun, once per task; not a job
# script). Worker 0 is the chief and writes the run folder; the others train the same steps with
# their files under <run folder>/workers/<rank>/ (Keras' multi-worker convention: only the chief's
# checkpoints and metrics count). The environment (venv/conda, MAGNB_*) is the batch step's.
set -euo pipefail
run_dir=${1:?usage: srun bash slurm/train_worker.sh RUN_DIR}
rank=${SLURM_PROCID:?not in a Slurm job step}
: "${MAGNB_NOTEBOOKS:?set by train_multinode.sbatch}" "${MAGNB_KERNEL:=magnb}"
# shellcheck source=slurm/_common.sh
source "${MAGNB_SLURM_DIR:?set by train_multinode.sbatch}/_common.sh"
magnb_quiet_kernel # this worker's own kernel profile (the batch step's may be on another node)

extra=()
out_dir=$run_dir
if ((rank > 0)); then
  out_dir=$run_dir/workers/$rank
  mkdir -p "$out_dir"
  extra=(-p runs_dir "$out_dir")
fi
echo "magnb worker $rank of ${SLURM_STEP_NUM_TASKS:-$SLURM_NTASKS} on $(hostname)" \
  "(local task ${SLURM_LOCALID:-0}, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}): $out_dir"
papermill "$MAGNB_NOTEBOOKS/04_train.ipynb" "$out_dir/04_train.ipynb" \
  -f "$run_dir/job.yaml" "${extra[@]}" -k "$MAGNB_KERNEL" --cwd "$PWD" --log-output \
  --no-progress-bar
