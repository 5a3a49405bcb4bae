"""Several `zoo tune` workers on one study in a real PostgreSQL server, started by the test.

The server: initdb and pg_ctl on a temporary directory, listening on a free loopback port, stopped at the
end. initdb refuses to run as root, so under root (CI) both run as the `postgres` user (runuser) on a
directory that user owns. Without the server binaries the tests skip, except under CI=true, where they fail:
.ci/run installs Debian's postgresql package first.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .test_tune import tune_extra

optuna = tune_extra("optuna")
tune_extra("psycopg2")

from zoo.tune.storage import open_storage

from .conftest import TINY_ID

# Small trials: a few hundred TD3+BC steps and 1-episode evaluations on the tiny Hopper dataset.
TRIAL = [
    "--algo",
    "td3bc",
    "--dataset",
    TINY_ID,
    "--n-evaluations",
    "2",
    "--eval-episodes",
    "1",
    "--sampler",
    "random",
    "--no-plots",
]


def server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = server_binaries()
    if bin_dir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (.ci/run installs it; CI must run these tests)")
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="zoo-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "zoo", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=50"
    run(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"
    )
    try:
        yield f"postgresql://zoo@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


def worker(url: str, study: str, out: Path, *args: str) -> subprocess.Popen:
    """A real `zoo tune` process, as a user would start one on another machine."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zoo.cli",
            "tune",
            *TRIAL,
            "--storage",
            url,
            "--study-name",
            study,
            "--out",
            str(out),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # one torch thread, as in-process tests use (conftest): two spin-wait on a busy 2-core machine
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def load(url: str, study: str):
    """The study as the workers see it (open_storage names the installed driver in postgresql:// URLs)."""
    return optuna.load_study(study_name=study, storage=open_storage(url))


def test_two_workers_share_one_study(tiny, postgres_url, tmp_path):
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    workers = [worker(postgres_url, "two-workers", out, "--n-trials", "5", "--steps", "100") for out in outs]
    outputs = [finish(w) for w in workers]

    study = load(postgres_url, "two-workers")
    trials = study.get_trials()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5  # exactly the requested number, both workers together
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    surplus = [t for t in trials if t.state.name == "FAIL"]
    assert all(t.user_attrs.get("surplus") for t in surplus)  # at most a trial asked at the same instant
    # no parameters run twice, and every trial ran in exactly one worker's folder
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 5
    ran = [sorted(p.name for p in out.glob("trial-*")) for out in outs]
    assert sorted(ran[0] + ran[1]) == sorted(f"trial-{t.number:04d}" for t in finished)
    assert not set(ran[0]) & set(ran[1])
    assert ran[0] and ran[1], "both workers should have run trials"
    for trial in finished:
        assert Path(trial.user_attrs["folder"]).parent in outs
        assert trial.user_attrs["eval_episodes"] >= 1
    # each worker prints its own trials' lines and the study's total budget
    total = sum(t.user_attrs["eval_episodes"] for t in trials)
    for output, names in zip(outputs, ran):
        for name in names:
            assert f"trial {int(name[6:]):>4}  alpha=" in output
    # the worker that finishes last sees the whole study (no pruning: the median pruner waits for 5 trials)
    assert any(
        "'two-workers': 5 complete, 0 pruned" in o and f"{total:,} evaluation episodes" in o for o in outputs
    )


def test_killed_worker_trial_fails_and_is_rerun_once(tiny, postgres_url, tmp_path):
    study_name = "killed-worker"
    beat = ["--heartbeat", "1", "--grace-period", "3"]
    settings = ["--n-trials", "2", "--steps", "600", *beat]
    victim = worker(postgres_url, study_name, tmp_path / "a", *settings)
    deadline = time.monotonic() + 300
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        try:
            running = [
                t
                for t in load(postgres_url, study_name).get_trials()
                if t.state.name == "RUNNING" and "folder" in t.user_attrs
            ]
        except KeyError:  # the study is not created yet
            pass
        assert victim.poll() is None, victim.communicate()[0]
    assert running, "no trial started within 300 s"
    time.sleep(2)  # inside the trial now: training or evaluating
    assert victim.poll() is None, victim.communicate()[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    running = [t for t in load(postgres_url, study_name).get_trials() if t.state.name == "RUNNING"]
    assert len(running) == 1  # the trial it was running stays RUNNING: nobody has noticed yet
    killed = running[0]

    time.sleep(4)  # past the grace period: its heartbeat is stale
    output = finish(worker(postgres_url, study_name, tmp_path / "b", *settings))

    study = load(postgres_url, study_name)
    trials = study.get_trials()
    assert trials[killed.number].state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1  # re-queued once
    retry = retries[0]
    assert retry.params == killed.params
    assert retry.state.name in ("COMPLETE", "PRUNED")
    assert retry.user_attrs["retry_of"] == killed.number
    assert Path(retry.user_attrs["folder"]).parent == tmp_path / "b"
    assert f"trial {retry.number:>4} (retry of {killed.number})" in output
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 2
    # the study stays usable: a third worker on it has nothing left to do and says so
    third = finish(worker(postgres_url, study_name, tmp_path / "c", *settings))
    assert "already has its 2 trials" in third
