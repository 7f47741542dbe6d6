#!/usr/bin/env bash
# The prepared GPU/TPU run of the platforms issue, for a session lent the
# device machine: one command, benchmark and tuner together, everything
# under $OUT (the device tool brings $OUT back).
#
#   bash bench/device_run.sh            # on the device, from the repo root
#
# Then commit $OUT/plan-<platform>-<device>.json as jaxpool/_plans/<platform>.json
# (set its provenance command to this script) and paste $OUT/bench.log's
# tables into the closing note.
set -euo pipefail
OUT=${OUT:-bench_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JAXPOOL_CACHE_DIR="$OUT/cache"
python3 -c "import jax, torch; print(jax.devices(), torch.__version__, torch.cuda.is_available())" | tee "$OUT/env.txt"
python3 -m bench --tune --json "$OUT/bench.json" --plot "$OUT/bench.png" 2>&1 | tee "$OUT/bench.log"
