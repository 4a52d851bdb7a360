"""Two datagen runs with one output: the second fails at once, in one line naming the output, and the
first finishes the file alone. Real processes, real HDF5."""

import fcntl
import signal
import subprocess
import sys
import time

from pdeserve.datagen.dataset import load_dataset

ARGS = ["darcy", "--resolution", "17", "--chunk-size", "1", "--quiet"]


def datagen(*args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pdeserve.cli", "datagen", *args]
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def test_a_run_refuses_an_output_whose_lock_another_run_holds(tmp_path):
    out = tmp_path / "x.h5"
    with open(tmp_path / "x.h5.lock", "a") as held:  # what a running datagen holds
        fcntl.flock(held, fcntl.LOCK_EX)
        result = datagen(*ARGS, "--n", "2", "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"pdeserve: error: another run is writing {out}; wait for it to finish or choose another --out"
    ]
    assert not out.exists() and not (tmp_path / "x.h5.partial").exists()
    assert datagen(*ARGS, "--n", "2", "--out", str(out)).returncode == 0  # released: it runs
    assert load_dataset(out).n_samples == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]  # no lock file left behind


def test_a_second_run_on_the_same_output_fails_while_the_first_finishes(tmp_path):
    out, partial = tmp_path / "x.h5", tmp_path / "x.h5.partial"
    args = [*ARGS, "--n", "20", "--seed", "3", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "pdeserve.cli", "datagen", *args])
    deadline = time.monotonic() + 120
    while not partial.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # holds its lock, paused, however fast the machine is
    try:
        assert partial.exists(), "the first run ended before it was paused"
        second = datagen(*args)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"pdeserve: error: another run is writing {out}; wait for it to finish or choose another --out"
    ]
    assert first.wait(timeout=300) == 0
    reference = tmp_path / "ref.h5"
    assert datagen(*args[:-1], str(reference)).returncode == 0
    assert load_dataset(out).fingerprint() == load_dataset(reference).fingerprint()
