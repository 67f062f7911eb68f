#!/usr/bin/env bash
# The seeded simulation of the core (backends/core/tests/simulation.rs, the `sim`
# feature): RINGMILL_SIM_SEEDS seeds (default 10,000) in release mode, split between
# RINGMILL_SIM_JOBS processes (default 2). A failing seed prints the one command that
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${RINGMILL_SIM_SEEDS:-10000}"
jobs="${RINGMILL_SIM_JOBS:-2}"
cargo test -p ringmill-core --features sim --release --test simulation --no-run
per=$(( (seeds + jobs - 1) / jobs ))
pids=()
for (( j = 0; j < jobs; j++ )); do
    first=$(( j * per ))
    count=$(( seeds - first < per ? seeds - first : per ))
    (( count > 0 )) || break
    RINGMILL_SIM_FIRST=$first RINGMILL_SIM_SEEDS=$count \
        cargo test -q -p ringmill-core --features sim --release --test simulation \
        seeded_scenarios_keep_the_behaviour_contract -- --nocapture &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
if (( status != 0 )); then
    echo "simulation: a seed failed (its replay command is printed above)" >&2
    exit 1
fi
echo "simulation: $seeds seeds passed"
