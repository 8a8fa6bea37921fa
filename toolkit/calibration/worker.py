"""Worker set-up for calibration studies on a Dask cluster started elsewhere.

Start workers with this module as a preload, so each one gets its own PyTensor
compile directory and numba cache (they race between processes otherwise;
pymc issue 7819) and one thread, before anything imports PyTensor::

    dask scheduler --port 8786
    dask worker tcp://HOST:8786 --nworkers 2 --nthreads 1 --preload toolkit.calibration.worker

The same two commands on more machines (each pointed at the one scheduler)
scale a study out; ``toolkit calibrate ... --scheduler tcp://HOST:8786`` then
sends the simulations to every worker.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}


def configure(name: str, root: str | None = None) -> bool:
    """Point this process's caches at a directory of its own; False if PyTensor was already imported."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or str(os.getpid())
    base = Path(root or os.environ.get("TOOLKIT_CALIBRATION_CACHE", tempfile.gettempdir())) / f"toolkit-worker-{safe}"
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)
    if "pytensor" in sys.modules:
        return False
    os.environ["PYTENSOR_FLAGS"] = f"base_compiledir={base / 'pytensor'}"
    os.environ["NUMBA_CACHE_DIR"] = str(base / "numba")
    return True


def dask_setup(worker) -> None:
    """Dask preload hook (``--preload toolkit.calibration.worker``)."""
    configure(f"{worker.name}-{os.getpid()}")


class SetupWorkerCaches(WorkerPlugin):
    """Worker plugin for a cluster started elsewhere (``--scheduler``): own caches, one thread.

    It can only redirect the caches of a worker that has not imported PyTensor
    yet; workers started with ``--preload toolkit.calibration.worker`` are set up
    at start instead. Either way the study records each worker's compile directory.
    """

    name = "toolkit-calibration-caches"

    def setup(self, worker):
        configure(f"{worker.name}-{os.getpid()}")
