"""Faults on the data side with real processes and signals: a `zoo datasets make --overwrite` killed with
SIGKILL while it writes, and damaged datasets in the root (`zoo datasets list` marks them, hides none)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.conftest import TINY_ID, tiny_episodes
from zoo.cli import main
from zoo.data import load_dataset, write_dataset
from zoo.data.minari_io import STAGING_PREFIX, remove_stale_staging, stale_staging

MAKE_ID = "zoo/hopper/random-v0"


def _staging_folders(root):
    return sorted(p for p in root.iterdir() if p.name.startswith(STAGING_PREFIX)) if root.is_dir() else []


def test_sigkill_during_datasets_make_overwrite_leaves_the_old_dataset_and_the_next_write_cleans_up(
    minari_root_per_test, make_episode, capsys
):
    root = minari_root_per_test
    old = [make_episode(0, 6, terminated=True), make_episode(1, 4, terminated=True)]
    write_dataset(MAKE_ID, old, env_id="Hopper-v5")
    before = load_dataset(MAKE_ID, device="cpu").rewards.tolist()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zoo.cli",
            "datasets",
            "make",
            MAKE_ID,
            "--steps",
            "6000",
            "--n-envs",
            "2",
            "--overwrite",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    # Kill it once Minari has started writing the new dataset into the staging folder.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and writer.poll() is None:
        staged = _staging_folders(root)
        if staged and any(staged[0].rglob("main_data.hdf5")):
            writer.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    assert writer.wait(timeout=60) == -signal.SIGKILL, (
        "the writer finished before it could be killed mid-write"
    )

    staged = _staging_folders(root)
    assert len(staged) == 1 and staged[0].name.startswith(
        f"{STAGING_PREFIX}{writer.pid}-"
    )  # left behind, hidden
    assert stale_staging(root) == staged  # its writer is dead
    assert load_dataset(MAKE_ID, device="cpu").rewards.tolist() == before  # the old dataset, untouched
    assert [p.name for p in (root / "zoo" / "hopper").iterdir() if p.name.startswith(".")] == []  # no backup

    # `zoo datasets list` says what is left and that the next write removes it.
    assert main(["datasets", "list"]) == 0
    listed = capsys.readouterr().out
    assert "1 folder(s) left by interrupted writes" in listed and staged[0].name in listed

    # The next write (any dataset) removes the dead writer's staging folder.
    write_dataset(TINY_ID, tiny_episodes(), env_id="Hopper-v5")
    assert _staging_folders(root) == [] and stale_staging(root) == []
    assert load_dataset(MAKE_ID, device="cpu").rewards.tolist() == before


def test_a_kill_between_the_two_renames_of_a_replacement_is_undone(minari_root_per_test, make_episode):
    """write_dataset replaces a dataset by renaming it aside, then the new one in; a writer killed between the
    two leaves only the backup: the next write puts it back (its pid is dead), so no dataset is lost."""
    write_dataset(TINY_ID, tiny_episodes(), env_id="Hopper-v5")
    rewards = load_dataset(TINY_ID, device="cpu").rewards.tolist()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = minari_root_per_test / TINY_ID
    backup = target.with_name(f".{target.name}.old-{dead.pid}-0123abcd")
    target.rename(backup)  # the state a SIGKILL between the renames leaves
    assert remove_stale_staging(minari_root_per_test) == [backup]
    assert not backup.exists() and load_dataset(TINY_ID, device="cpu").rewards.tolist() == rewards


def test_datasets_list_marks_damaged_datasets_and_hides_none(write_tiny, minari_root_per_test, capsys):
    write_tiny("zoo/hopper/good-v0")
    write_tiny("zoo/hopper/nan-v0")
    write_tiny("zoo/hopper/truncated-v0")
    with h5py.File(minari_root_per_test / "zoo/hopper/nan-v0/data/main_data.hdf5", "r+") as handle:
        handle["episode_1/actions"][2, 0] = np.nan  # transition 4 + 2
    hdf5 = minari_root_per_test / "zoo/hopper/truncated-v0/data/main_data.hdf5"
    hdf5.write_bytes(hdf5.read_bytes()[: hdf5.stat().st_size // 2])  # a copy cut short

    assert main(["datasets", "list"]) == 0  # metadata and sizes only: the NaN is not known yet
    lines = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("zoo/")
    }
    assert set(lines) == {"zoo/hopper/good-v0", "zoo/hopper/nan-v0", "zoo/hopper/truncated-v0"}
    assert (
        "BAD: unreadable main_data.hdf5" in lines["zoo/hopper/truncated-v0"]
        and "truncated file" in lines["zoo/hopper/truncated-v0"]
    )
    assert lines["zoo/hopper/good-v0"].split()[1:5] == ["12", "transitions", "3", "episodes"]
    assert lines["zoo/hopper/nan-v0"].endswith("?")

    assert main(["datasets", "list", "--check"]) == 0  # reads each dataset once and records the verdict
    lines = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("zoo/")
    }
    assert (
        "BAD: Dataset 'zoo/hopper/nan-v0' has a non-finite value (nan) in 'actions' at transition 6 "
        "(episode 1, step 2)" in lines["zoo/hopper/nan-v0"]
    )
    assert lines["zoo/hopper/good-v0"].endswith("mean return      53.7")
    assert main(["datasets", "list"]) == 0  # the verdict is remembered for these files, without reading them
    assert "BAD: Dataset 'zoo/hopper/nan-v0'" in capsys.readouterr().out
    with pytest.raises(Exception, match="non-finite value"):
        load_dataset("zoo/hopper/nan-v0", device="cpu")
