#!/usr/bin/env bash
# The README's test command: every crate of the workspace, every conformance test on
# io_uring and on mio. Fails if the io_uring arm was skipped on a machine that has it.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== cargo test"
cargo test 2>&1 | tee "$log"

# On a kernel that allows io_uring the uring arms must have run, not been skipped.
if grep -q "skipped: io_uring" "$log"; then
  if [ "${RINGMILL_TEST_ALLOW_MISSING_URING:-0}" != "1" ]; then
    echo "error: io_uring tests were skipped on this machine" >&2
    exit 1
  fi
fi
