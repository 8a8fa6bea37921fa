#!/usr/bin/env bash
# Scaling benchmark of the JAX backend on a GPU, in one call.
#
# Runs benchmarks/bench_scaling.py with --backend numpyro for durability, CAR-T, MRD and joint at 60 and
# 600 simulated patients (4 chains x 1000 tuning + 1000 draws), one fit per process, each under a time
# limit, smallest cohorts first, and stops starting fits when the overall budget is spent. Writes under
# $OUT: rows.jsonl (one JSON object a fit, as bench_scaling.py), table.md, device.txt (nvidia-smi, JAX
# devices, package versions) and run.log.
#
# Two steps, because a device machine reaches no package index:
#
#   1. here, with network (once):   bash benchmarks/device_scaling.sh prepare
#      downloads the wheels the device image lacks (pymc, pytensor, arviz, pandera, ...; the image already
#      has jax with its CUDA plugin, numpyro, numpy, scipy, pandas, xarray) into .device_wheels/ (git
#      ignores it; a device call must carry it) and prints its size (the working tree and carried folders
#      travel 64 MiB at most);
#   2. on the device machine, in the repository root, carrying .device_wheels:
#      bash benchmarks/device_scaling.sh
#
# Settings (environment): OUT (default /tmp/device_scaling), PYTHON (default python3: on the device image
# the one with JAX on CUDA), MODELS (durability,cart,mrd,joint), PATIENTS (60,600), RUNS (the fits in the
# order to run them, as MODEL:PATIENTS or MODEL:PATIENTS:CHAINS, e.g. "durability:60,cart:600,cart:60:64";
# default every model at every size, smallest cohorts first), CHAINS/TUNE/DRAWS (4/1000/1000), FIT_TIMEOUT
# seconds per fit (150), BUDGET seconds for all fits (480, inside a 10-minute device command), WHEELHOUSE
# (.device_wheels).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-.device_wheels}
# Packages the device image lacks (its package list as of November 2026) that the toolkit imports on the fit path.
MISSING="pymc pytensor arviz arviz-base arviz-stats arviz-plots xarray-einstats cachetools better-optimize
pandera pydantic pydantic-core annotated-types typing-inspection typeguard netCDF4 cftime openpyxl et-xmlfile
pyreadstat dask distributed locket partd zict tblib tornado pytz tzdata platformdirs"

if [[ "${1:-}" == "prepare" ]]; then
    mkdir -p "$WHEELHOUSE"
    # the versions this checkout was tested with, where the local environment has them
    specs=$(for p in $MISSING; do
        v=$($PY -m pip show "$p" 2>/dev/null | awk '/^Version:/ {print $2}')
        if [[ -n "$v" ]]; then echo "$p==$v"; else echo "$p"; fi
    done)
    # shellcheck disable=SC2086
    $PY -m pip download --dest "$WHEELHOUSE" --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any $specs || exit 1
    du -sh "$WHEELHOUSE"
    echo "carry $WHEELHOUSE on the device call (the working tree may travel 64 MiB in all)"
    exit 0
fi

OUT=${OUT:-/tmp/device_scaling}
MODELS=${MODELS:-durability,cart,mrd,joint}
PATIENTS=${PATIENTS:-60,600}
CHAINS=${CHAINS:-4}
TUNE=${TUNE:-1000}
DRAWS=${DRAWS:-1000}
FIT_TIMEOUT=${FIT_TIMEOUT:-150}
BUDGET=${BUDGET:-480}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PYTENSOR_FLAGS="base_compiledir=/tmp/pytensor-device" NUMBA_CACHE_DIR=/tmp/numba-device
start=$(date +%s)

# 1. the toolkit's own dependencies, from the carried wheels (no index: the machine reaches none)
if ! $PY -c "import pymc, arviz_stats, pandera" 2>/dev/null; then
    if [[ -d "$WHEELHOUSE" ]]; then
        # shellcheck disable=SC2086
        $PY -m pip install --quiet --no-index --find-links "$WHEELHOUSE" --no-deps "$WHEELHOUSE"/*.whl \
            || echo "installing the carried wheels failed"
    else
        echo "no $WHEELHOUSE: run 'bash benchmarks/device_scaling.sh prepare' where PyPI is reachable and carry it"
    fi
fi
# 2. JAX on the GPU: the image's; else, where there is a GPU, the CUDA wheels (wheelhouse, or PyPI if reachable)
if nvidia-smi > /dev/null 2>&1 && ! $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    echo "a GPU is present but JAX does not see it: installing jax[cuda12]"
    $PY -m pip install --quiet --find-links "$WHEELHOUSE" "jax[cuda12]" numpyro || echo "jax[cuda12] install failed"
fi
{
    nvidia-smi || echo "nvidia-smi not found"
    $PY - <<'EOF'
import importlib.metadata as md
import jax
print("jax backend:", jax.default_backend(), "devices:", jax.devices())
for p in ("jax", "jaxlib", "numpyro", "pymc", "pytensor", "arviz", "numpy"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "not installed")
EOF
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
if ! $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    echo "WARNING: no GPU visible to JAX; the rows below are CPU numbers"
fi

# 3. one fit per process, in RUNS' order, until the budget is spent
if [[ -z "${RUNS:-}" ]]; then
    RUNS=$(for n in ${PATIENTS//,/ }; do for m in ${MODELS//,/ }; do printf '%s:%s,' "$m" "$n"; done; done)
fi
for run in ${RUNS//,/ }; do
    IFS=: read -r m n c <<< "$run"
    c=${c:-$CHAINS}
    elapsed=$(( $(date +%s) - start ))
    if (( elapsed + 30 > BUDGET )); then
        echo "budget of ${BUDGET}s spent after ${elapsed}s: not starting $m at $n patients"
        echo "{\"model\": \"$m\", \"patients\": $n, \"error\": \"not run: budget of ${BUDGET}s spent\"}" >> "$OUT/rows.jsonl"
        continue
    fi
    left=$(( BUDGET - elapsed ))
    limit=$(( FIT_TIMEOUT < left ? FIT_TIMEOUT : left ))
    echo "== $m, $n patients, $c chains, numpyro, limit ${limit}s"
    $PY benchmarks/bench_scaling.py --models "$m" --patients "$n" --backend numpyro --chains "$c" \
        --tune "$TUNE" --draws "$DRAWS" --timeout "$limit" --out "$OUT/parts" \
        | awk -v row="| $m " 'index($0, row) == 1 && !seen++'
    cat "$OUT/parts/rows.jsonl" >> "$OUT/rows.jsonl" && rm -f "$OUT/parts/rows.jsonl"
done
rm -rf "$OUT/parts"
$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_scaling import markdown_table
out = Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
(out / "table.md").write_text(markdown_table(rows) + "\n")
print(markdown_table(rows))
EOF
echo "done in $(( $(date +%s) - start ))s; results in $OUT"
