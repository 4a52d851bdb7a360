"""``datagen import`` streams: a source file larger than the memory its process may use imports whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
from import_sources import pdebench_darcy

N, SIDE, BLOCK = 2400, 128, 200  # two float32 variables of 157 MB each: a 315 MB source


def _expected(lo: int, hi: int, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples lo..hi of the big file: distinct per sample, and cheap to compress."""
    offsets = np.arange(lo, hi, dtype=np.float32)[:, None, None]
    return pattern + offsets, (2 * pattern - offsets)[:, None]


# Run in a child: import everything the import needs (a small import warms it all up), measure the
# process's address space, then allow it only BUDGET bytes more and import the big file.
CHILD = textwrap.dedent(
    """
    import resource, sys
    from pdeserve.datagen.importers import import_file

    small, big, out, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import_file("pdebench", small, out + ".warm.h5", "warm", progress=False)
    with open("/proc/self/status") as status:
        base = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (base + budget, base + budget))
    import_file("pdebench", big, out, "big", chunk_size=16, progress=False)
    print(base)
    """
)


def test_a_source_larger_than_the_memory_allowed_imports_in_chunks(tmp_path):
    pattern = np.zeros((SIDE, SIDE), np.float32)  # mostly constant: compressed fast
    pattern[:4] = np.random.default_rng(0).integers(0, 8, (4, SIDE))
    source = tmp_path / "2D_DarcyFlow_big.hdf5"
    with h5py.File(source, "w") as f:
        nu = f.create_dataset("nu", (N, SIDE, SIDE), np.float32)
        tensor = f.create_dataset("tensor", (N, 1, SIDE, SIDE), np.float32)
        for lo in range(0, N, BLOCK):
            nu[lo : lo + BLOCK], tensor[lo : lo + BLOCK] = _expected(lo, lo + BLOCK, pattern)
        f.attrs["beta"] = 1.0
    size = source.stat().st_size
    assert size > 300e6
    pdebench_darcy(tmp_path / "small.hdf5")
    budget = size // 3  # less than either variable alone
    out = tmp_path / "big.h5"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "small.hdf5"), str(source), str(out), str(budget)],
        capture_output=True,
        text=True,
        env={"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        assert f.attrs["source_format"] == "pdebench" and f["nu"].shape == (N, SIDE, SIDE)
        for lo in range(0, N, BLOCK):
            nu, tensor = _expected(lo, lo + BLOCK, pattern)
            np.testing.assert_array_equal(f["nu"][lo : lo + BLOCK], nu)
            np.testing.assert_array_equal(f["tensor"][lo : lo + BLOCK], tensor[:, 0])
