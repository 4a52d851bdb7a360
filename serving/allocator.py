"""Keep freed tensor memory in the process instead of handing it back to the OS after every forward pass.

glibc serves blocks above its mmap threshold (128 KiB at first, raised on the fly up to 32 MiB) with
fresh mappings and trims the heap whenever 128 KiB lie free at its top, so each forward pass of a
batched operator unmaps its activations and the next one page-faults them back in. Fixing both
thresholds high makes the heap keep them, which speeds up batched forward passes and leaves batch-1
latency as it was (bench/serving.py calls this for its in-process baseline as the replica does, so both
sides allocate alike).
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger("pdeserve")

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # the most glibc's own adjustment raises it to on 64-bit
TRIM_THRESHOLD_BYTES = 512 * 2**20


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process; False (and nothing changed) where the C
    library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        logger.info("not glibc: malloc thresholds left as they are")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
