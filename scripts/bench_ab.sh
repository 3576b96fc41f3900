#!/usr/bin/env bash
# Server CPU per utterance of this checkout against another commit, measured side by side:
# both servers run at the same time, each under its own load (scripts/bench.py), so a
# machine whose speed drifts (shared hosts do, by 2x from day to day) slows both alike.
#
#   scripts/bench_ab.sh BASE_REF [SESSIONS] [DURATION_S] [RUNS]
#
# Prints, per run, each side's CPU ms per utterance and the ratio new/base. Both sides
# share the 2 cores with both load generators: keep SESSIONS at a load both carry
# (150 each by default) and compare ratios, not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REF=${1:?usage: scripts/bench_ab.sh BASE_REF [SESSIONS] [DURATION_S] [RUNS]}
SESSIONS=${2:-150}
DURATION=${3:-30}
RUNS=${4:-3}
PY=.venv/bin/python
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/base" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git worktree add --detach -q "$WORK/base" "$BASE_REF"
COMMON=(--nodes 30 --capacity 64 --service-time 0.05 --duration "$DURATION" --quiet-wait 0
        --retries 0 --arrival 3 --sessions "$SESSIONS" --max-other-cpu 1000)
for run in $(seq "$RUNS"); do
  # The base imports its own package (PYTHONPATH comes before the editable install).
  (cd "$WORK" && PYTHONPATH="$WORK/base" "$OLDPWD/$PY" "$WORK/base/scripts/bench.py" \
      "${COMMON[@]}" --out "$WORK/base_$run.json" >"$WORK/base_$run.log" 2>&1) &
  ("$PY" scripts/bench.py "${COMMON[@]}" --out "$WORK/new_$run.json" >"$WORK/new_$run.log" 2>&1) &
  wait
  "$PY" - "$WORK/base_$run.json" "$WORK/new_$run.json" "$run" <<'PY'
import json, sys
base, new = (json.load(open(path))["runs"][0] for path in sys.argv[1:3])
b, n = base["server_cpu_s_per_1000_utt"], new["server_cpu_s_per_1000_utt"]
print(f"run {sys.argv[3]}: base {b:.2f} ms/utt ({base['outcome_percent']:.0f} % outcomes), "
      f"new {n:.2f} ms/utt ({new['outcome_percent']:.0f} %), new/base {n / b:.3f}")
PY
done
