"""A real single-node Slurm cluster for the tests, in a temporary folder.

Debian's ``slurm-wlm`` (22.05) and ``munge`` (which ``.ci/run`` installs) run as root here:
``munged`` with its own key and socket, ``slurmctld`` and ``slurmd`` with a ``slurm.conf`` in the
folder (no accounting, ``proctrack/linuxproc``, ``task/none``, state and spool dirs in the folder,
free TCP ports), one node of 2 CPUs with a fake ``gpu`` gres of 2 devices (``/dev/null`` and
``/dev/zero``) so that GPU job scripts run unmodified and their jobs see
``CUDA_VISIBLE_DEVICES=0,1``. The daemons run in the foreground as our children and are stopped by
their PIDs. Commands talk to this cluster through ``SLURM_CONF`` (see :attr:`SlurmCluster.env`).

``slurm_cluster`` is the session-scoped pytest fixture; it fails (with the reason) when the
daemons cannot be started. For a cluster to poke at by hand::

    python -m tests.slurm_cluster /tmp/slurm-dev     # prints the SLURM_CONF line, Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "PREEMPTED"}  # fmt: skip


class ClusterError(RuntimeError):
    """The cluster could not be started; the message says which step failed and why."""


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class SlurmCluster:
    """munged + slurmctld + slurmd under ``root``; :meth:`start`, :meth:`stop`, helpers."""

    def __init__(self, root: Path, cpus: int = 2, gpus: int = 2) -> None:
        self.root = Path(root)
        self.cpus = cpus
        self.gpus = gpus
        self.node = socket.gethostname()
        self.conf = self.root / "etc" / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    # ---------------------------------------------------------------------------------- set-up

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands (sbatch, squeue, ...) and job scripts."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = env.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
            if key != "SLURM_CONF":
                del env[key]
        # jobs see what a user's shell would give them: ipykernel, for one, stops capturing
        # C-level output into notebooks when it sees it runs under pytest
        env.pop("PYTEST_CURRENT_TEST", None)
        return env

    def _write_config(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o755)
        ctld_port, slurmd_port = _free_ports(2)
        r = self.root
        gres = f"Gres=gpu:{self.gpus}" if self.gpus else ""
        self.conf.write_text(
            f"""# magnb test cluster ({r}); written by tests/slurm_cluster.py
ClusterName=magnbtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/state/slurmctld.pid
SlurmdPidFile={r}/spool/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=1
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=20
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=64000 {gres} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        if self.gpus:
            devices = ",".join(["/dev/null", "/dev/zero", "/dev/full", "/dev/random"][: self.gpus])
            (r / "etc" / "gres.conf").write_text(
                f"AutoDetect=off\nNodeName={self.node} Name=gpu File={devices}\n"
            )

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.root / "log" / f"{name}.out"
        self.logs[name] = log
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # Ctrl-C in a terminal reaches pytest, not the daemons
            )
        self.procs[name] = proc
        return proc

    def _tail(self, name: str) -> str:
        out = []
        for path in (self.logs.get(name), self.root / "log" / f"{name}.log"):
            if path is not None and path.is_file():
                out.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(out).strip() or "(no log)"

    def _wait(self, what: str, check, timeout: float, daemon: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            proc = self.procs.get(daemon)
            if proc is not None and proc.poll() is not None:
                raise ClusterError(
                    f"{daemon} exited with status {proc.returncode} while waiting for {what}:\n"
                    + self._tail(daemon)
                )
            if check():
                return
            time.sleep(0.3)
        raise ClusterError(
            f"timed out after {timeout:.0f} s waiting for {what}:\n" + self._tail(daemon)
        )

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        missing = [d for d in DAEMONS if _which(d) is None]
        if missing:
            raise ClusterError(
                f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge; .ci/run does)"
            )
        if os.geteuid() != 0:
            raise ClusterError("the test cluster runs its daemons as root (SlurmUser=root)")
        self._write_config()
        key = self.root / "munge" / "munge.key"
        done = subprocess.run(
            [_which("mungekey"), "--create", f"--keyfile={key}", "--bits=1024"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:  # older munge: a random key does as well
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        m = self.root / "munge"
        self._spawn(
            "munged",
            [_which("munged"), "--foreground", "--force", f"--socket={self.socket}",
             f"--key-file={key}", f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
             f"--seed-file={m}/munged.seed", "--num-threads=4"],
        )  # fmt: skip
        self._wait("the munge socket", self.socket.exists, timeout, "munged")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: self._ok(["scontrol", "ping"], "UP"), timeout, "slurmctld")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait("the node to be idle", self._node_idle, timeout, "slurmd")
        return self

    def _ok(self, cmd: list[str], needle: str) -> bool:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and needle in done.stdout

    def _node_idle(self) -> bool:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env
        )
        return done.returncode == 0 and done.stdout.strip().rstrip("*") == "idle"

    def stop(self) -> None:
        """Cancel what is still queued or running, then stop the daemons (slurmd, slurmctld,
        munged) by their PIDs: TERM, then KILL after 15 s."""
        if all(self.procs.get(n) and self.procs[n].poll() is None for n in ("slurmctld", "slurmd")):
            try:
                jobs = self.run(["squeue", "-h", "-o", "%A"], check=False, timeout=20)
                ids = sorted(set(jobs.stdout.split()))
                if ids:
                    self.run(["scancel", *ids], check=False, timeout=20)
                    deadline = time.time() + 40
                    while (
                        time.time() < deadline
                        and self.run(
                            ["squeue", "-h", "-o", "%A"], check=False, timeout=20
                        ).stdout.strip()
                    ):
                        time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    # ------------------------------------------------------------------------------- helpers

    def run(self, cmd: list[str], check: bool = True, timeout: float = 600, **kw):
        """A client command against this cluster (``SLURM_CONF`` set)."""
        env = {**self.env, **kw.pop("env", {})}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kw)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def job(self, job_id: str | int) -> dict[str, str]:
        """``scontrol show job`` as a dict (first record; array tasks: see :meth:`jobs`)."""
        jobs = self.jobs(job_id)
        return jobs[0] if jobs else {}

    def jobs(self, job_id: str | int) -> list[dict[str, str]]:
        done = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False)
        records = []
        for line in done.stdout.splitlines():
            record = {}
            for item in line.split():
                key, _, value = item.partition("=")
                record[key] = value
            if record:
                records.append(record)
        return records

    def wait_done(self, job_id: str | int, timeout: float = 600) -> list[dict[str, str]]:
        """Poll (each second) until the job, or every task of an array, has ended."""
        deadline = time.time() + timeout
        records: list[dict[str, str]] = []
        while time.time() < deadline:
            records = self.jobs(job_id)
            if records and all(r.get("JobState") in ENDED for r in records):
                return records
            time.sleep(1)
        states = [r.get("JobState") for r in records]
        raise AssertionError(f"job {job_id} has not ended after {timeout} s: {states}")

    def wait_state(self, job_id: str | int, states: set[str], timeout: float = 300) -> str:
        deadline = time.time() + timeout
        state = "?"
        while time.time() < deadline:
            state = self.job(job_id).get("JobState", "?")
            if state in states:
                return state
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {state} after {timeout} s, not in {states}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node Slurm cluster for the session. One that cannot start (Slurm or munge
    not installed, not root) fails every test that needs it, with the reason: a missing tool is
    a failed check, never a skipped one dressed as a pass (``.ci/system-packages`` installs it)."""
    root = Path(
        os.environ.get("MAGNB_TEST_SLURM_DIR") or tmp_path_factory.mktemp("slurm", numbered=True)
    )
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except ClusterError as exc:
        cluster.stop()
        pytest.fail(f"the local Slurm test cluster cannot start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "/tmp/magnb-slurm-dev").resolve()
    cluster = SlurmCluster(root)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    try:
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}", flush=True)
        while True:
            signal.pause()
    except ClusterError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
