# shellcheck shell=bash
# Sourced by the job scripts in slurm/ (not a job script itself). Settings come from the variables
# documented at the top of each script; nothing here needs editing.
#
#   magnb_env                 load modules, activate the venv or conda env, check magnb imports
#   magnb_check_kernel        fail early (with the fix) when the Jupyter kernel is not installed
#   magnb_log_into FILE       from here on, copy everything the job prints into FILE as well
#   magnb_run CMD...          run CMD with preemption handling (see below), return its status
#   magnb_train_notebook DIR  papermill notebooks/04_train.ipynb for the run folder DIR
#   magnb_train_job CONFIG [--index I]   all of a one-node training job (train, 2-GPU, sweep)
#   magnb_job_tag             this job's id as its Slurm output names it: 42, or 41_3 in an array
#
# A run folder's record is append-only: every leg of a requeued job appends to the job's log
# slurm-<tag>.log there (each leg's header says which restart it is and where it resumes), and a
# resubmitted finished run is not run again, so the executed notebook that trained it stays.
#
# Quiet jobs (magnb_quiet_kernel): TensorFlow's C++ INFO/WARNING lines are off
# (TF_CPP_MIN_LOG_LEVEL=2); the kernel runs with an IPython profile of its own (IPYTHONDIR, a
# temporary folder) that keeps C-level output out of the notebook, so that it reaches the log
# once and not again through papermill's --log-output, drops the kernel's own warnings ("running
# over TCP without encryption") and tensorflow's Python INFO lines (in a kernel TensorFlow logs at
# INFO: MirroredStrategy's "Reduce to ..." for every traced step). MAGNB_VERBOSE=1 keeps it all.
#
# Preemption and time limits. The scripts ask for --requeue and --signal=B:USR1@120:
# - USR1 (120 s before the time limit, to the batch shell only): the training is stopped (TERM)
#   and the job requeues itself with `scontrol requeue`;
# - TERM (preemption, `scontrol requeue`, scancel): Slurm signals every process of the job, the
#   script forwards it to the training as well and exits; Slurm requeues a preempted job.
# Either way the next start runs the same config, so it finds the same run folder (its name is the
# config's hash) and Keras' BackupAndRestore resumes after the last finished epoch.

magnb_die() {
  echo "magnb job: error: $*" >&2
  exit 2
}

magnb_env() {
  : "${MAGNB_KERNEL:=magnb}"
  if [[ -n ${MAGNB_MODULES:-} ]]; then
    if ! type module >/dev/null 2>&1; then
      for init in /etc/profile.d/modules.sh /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash; do
        # shellcheck disable=SC1090
        [[ -f $init ]] && source "$init" && break
      done
    fi
    type module >/dev/null 2>&1 || magnb_die "MAGNB_MODULES is set but there is no 'module' command"
    # shellcheck disable=SC2086  # a list of module names
    module load ${MAGNB_MODULES}
  fi
  if [[ -n ${MAGNB_CONDA_ENV:-} ]]; then
    command -v conda >/dev/null 2>&1 || magnb_die "MAGNB_CONDA_ENV is set but conda is not on PATH"
    set +u # conda's activation scripts read unset variables
    eval "$(conda shell.bash hook)"
    conda activate "$MAGNB_CONDA_ENV" || magnb_die "cannot activate conda env $MAGNB_CONDA_ENV"
    set -u
  else
    local venv=${MAGNB_VENV:-$MAGNB_ROOT/.venv}
    [[ -f $venv/bin/activate ]] || magnb_die "no virtualenv at $venv (set MAGNB_VENV, or" \
      "MAGNB_CONDA_ENV, or MAGNB_ROOT to the magnb checkout; run 'make venv' there)"
    set +u
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
    set -u
  fi
  MAGNB_PYTHON=$(command -v python) || magnb_die "no python after activating the environment"
  "$MAGNB_PYTHON" -c "import magnb" 2>/dev/null ||
    magnb_die "$MAGNB_PYTHON cannot import magnb: install it into the env (pip install -e $MAGNB_ROOT)"
  : "${MAGNB_SLURM_DIR:=$MAGNB_ROOT/slurm}" "${MAGNB_NOTEBOOKS:=$MAGNB_ROOT/notebooks}"
  [[ -f $MAGNB_NOTEBOOKS/04_train.ipynb ]] || magnb_die "no $MAGNB_NOTEBOOKS/04_train.ipynb" \
    "(set MAGNB_ROOT to the magnb checkout, or submit with magnb submit)"
  export MAGNB_ROOT MAGNB_SLURM_DIR MAGNB_NOTEBOOKS MAGNB_KERNEL MAGNB_PYTHON
  export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
  # the Keras backend of the training, the notebook's kernel and doctor alike: tensorflow, or
  # jax (an env with jax[cuda12] and no TensorFlow; multi-node through jax.distributed)
  export KERAS_BACKEND=${KERAS_BACKEND:-tensorflow}
}

magnb_check_kernel() {
  # papermill's NoSuchKernel, caught before the job spends its allocation
  "$MAGNB_PYTHON" - "$MAGNB_KERNEL" <<'EOF' || exit 2
import sys
from jupyter_client.kernelspec import KernelSpecManager

name = sys.argv[1]
specs = KernelSpecManager().find_kernel_specs()
if name not in specs:
    sys.exit(f"magnb job: error: no Jupyter kernel {name!r} (found: {', '.join(sorted(specs))}); "
             f"install it with: {sys.executable} -m ipykernel install --sys-prefix --name {name}")
argv0 = KernelSpecManager().get_kernel_spec(name).argv[0]
print(f"kernel      {name} -> {argv0}")
EOF
}

magnb_job_tag() {
  if [[ -n ${SLURM_ARRAY_JOB_ID:-} && -n ${SLURM_ARRAY_TASK_ID:-} ]]; then
    echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
  else
    echo "${SLURM_JOB_ID:-local}"
  fi
}

magnb_header() {
  local array=""
  if [[ -n ${SLURM_ARRAY_JOB_ID:-} && -n ${SLURM_ARRAY_TASK_ID:-} ]]; then
    array=", array job ${SLURM_ARRAY_JOB_ID} task ${SLURM_ARRAY_TASK_ID}"
  fi
  echo "magnb job   ${SLURM_JOB_ID:-no Slurm job}${array} (${SLURM_JOB_NAME:-}) on $(hostname)," \
    "$(date -Is)"
  echo "restarts    ${SLURM_RESTART_COUNT:-0} (leg $((${SLURM_RESTART_COUNT:-0} + 1)) of this job)"
  echo "cpus        ${SLURM_CPUS_PER_TASK:-?} per task, ${SLURM_NTASKS:-1} task(s), ${SLURM_JOB_NUM_NODES:-1} node(s)"
  echo "gpus        CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} (Slurm: ${SLURM_JOB_GPUS:-none})"
  echo "python      $MAGNB_PYTHON"
  echo "magnb       $MAGNB_ROOT (job scripts $MAGNB_SLURM_DIR, notebooks $MAGNB_NOTEBOOKS)"
  echo "working dir $PWD"
}

magnb_log_into() {
  mkdir -p "$(dirname "$1")"
  # tee ignores TERM so that the last lines of a stopped job still reach the log
  exec > >(trap '' TERM INT && exec tee -a "$1") 2>&1
  _magnb_tee=$!
  trap _magnb_exit EXIT
}

_magnb_tee=""
_magnb_quiet_dir=""

_magnb_exit() {
  if [[ -n $_magnb_quiet_dir ]]; then rm -rf "$_magnb_quiet_dir"; fi
  if [[ -n $_magnb_tee ]]; then
    # Slurm ends every process of the job once this script exits: let tee write the last lines
    exec >&- 2>&-
    wait "$_magnb_tee" 2>/dev/null || true
  fi
}

magnb_quiet_kernel() {
  # see "Quiet jobs" at the top; MAGNB_VERBOSE=1 leaves the kernel as it is
  [[ ${MAGNB_VERBOSE:-0} == 1 ]] && return 0
  _magnb_quiet_dir=$(mktemp -d "${TMPDIR:-/tmp}/magnb-ipython.XXXXXX")
  mkdir -p "$_magnb_quiet_dir/profile_default/startup"
  cat >"$_magnb_quiet_dir/profile_default/ipython_kernel_config.py" <<'EOF'
# written by magnb's job scripts (slurm/_common.sh): a quiet kernel for batch notebooks
c = get_config()  # noqa: F821
c.IPKernelApp.capture_fd_output = False  # C-level lines: once, in the job log
c.IPKernelApp.log_level = "ERROR"  # not "Kernel is running over TCP without encryption"
c.HistoryManager.enabled = False
EOF
  cat >"$_magnb_quiet_dir/profile_default/startup/00-magnb-quiet.py" <<'EOF'
import logging

# TensorFlow sets its logger to INFO in a kernel; the filter outlives that
logging.getLogger("tensorflow").addFilter(lambda record: record.levelno >= logging.WARNING)
EOF
  export IPYTHONDIR=$_magnb_quiet_dir
  trap _magnb_exit EXIT
}

_magnb_child=""
_magnb_signal=""

_magnb_tree() {
  # a process and all its descendants (the Jupyter kernel runs in a session of its own)
  local pid
  echo "$1"
  for pid in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    _magnb_tree "$pid"
  done
}

_magnb_on_signal() {
  _magnb_signal=$1
  echo "magnb job: SIG$1 at $(date -Is): stopping; a restart resumes from the last finished epoch"
  if [[ -n $_magnb_child ]]; then
    # shellcheck disable=SC2046  # one PID per word
    kill -TERM $(_magnb_tree "$_magnb_child") 2>/dev/null || true
  fi
}

magnb_run() {
  "$@" &
  _magnb_child=$!
  trap '_magnb_on_signal TERM' TERM
  trap '_magnb_on_signal INT' INT
  trap '_magnb_on_signal USR1' USR1
  local status
  while true; do
    status=0
    wait "$_magnb_child" || status=$?
    # a trapped signal ends `wait` early (status > 128) while the child may still be running
    if ((status > 128)) && kill -0 "$_magnb_child" 2>/dev/null; then
      continue
    fi
    break
  done
  trap - TERM INT USR1
  _magnb_child=""
  if [[ $_magnb_signal == USR1 ]]; then
    if [[ -n ${SLURM_JOB_ID:-} ]] && scontrol requeue "$SLURM_JOB_ID"; then
      echo "magnb job: requeued job $SLURM_JOB_ID before its time limit"
      exit 0
    fi
    echo "magnb job: could not requeue job ${SLURM_JOB_ID:-?}; submit it again to resume"
  fi
  return "$status"
}

magnb_train_notebook() {
  local run_dir=$1
  shift
  magnb_run papermill "$MAGNB_NOTEBOOKS/04_train.ipynb" "$run_dir/04_train.ipynb" \
    -f "$run_dir/job.yaml" -k "$MAGNB_KERNEL" --cwd "$PWD" --log-output --no-progress-bar "$@"
}

magnb_summary() {
  # one line from the run's metrics, so that the log says what was trained and how
  "$MAGNB_PYTHON" - "$1" <<'EOF' || true
import json, pathlib, sys
path = pathlib.Path(sys.argv[1]) / "metrics.json"
if path.is_file():
    m = json.loads(path.read_text())
    print(f"magnb job: {m['run_id']}: {m['epochs_trained']} epochs "
          f"(resumed from {m['resumed_from_epoch']}), {m['replicas']} replica(s), "
          f"global batch {m['global_batch']}")
EOF
}

magnb_train_job() {
  local config=$1
  shift
  local run_dir leg
  run_dir=$("$MAGNB_PYTHON" -m magnb.slurm prepare "$config" "$@")
  magnb_log_into "$run_dir/slurm-$(magnb_job_tag).log"
  magnb_header
  echo "config      $config $*"
  echo "run folder  $run_dir"
  leg=$("$MAGNB_PYTHON" -m magnb.slurm leg "$run_dir") || exit 2
  echo "magnb job: ${leg#* }"
  if [[ $leg == finished* ]]; then
    magnb_summary "$run_dir"
    return 0
  fi
  magnb_check_kernel
  magnb_quiet_kernel
  local status=0
  magnb_train_notebook "$run_dir" || status=$?
  echo "magnb job: papermill exited with status $status at $(date -Is)"
  magnb_summary "$run_dir"
  return "$status"
}
