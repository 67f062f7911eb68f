#!/usr/bin/env bash
# The cargo-fuzz targets (fuzz/fuzz_targets/), each run for a fixed budget under nightly.
#
# Built with debug assertions (overflow checks included) and without a sanitizer: the code
# under test is safe Rust (ringmill's layers, rustls), where a sanitizer finds nothing a
# panic would not, and the build is several times faster; AddressSanitizer runs over the
# core and the drivers in ci/asan.sh instead. A crash fails the step; its input is left in
# fuzz/artifacts/<target>/ (reproduce with `cargo +nightly fuzz run -s none -a <target>
# <file>`) and belongs in a regression test of the normal test suite once fixed.
#
#   ci/fuzz-targets.sh [SECONDS]     # budget per target, default 20
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
budget="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
flags=(--sanitizer none --debug-assertions)
# Build every target first, so the budget goes to fuzzing.
cargo +nightly fuzz build "${flags[@]}"
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz target $target (${budget} s)"
    log="$(mktemp)"
    if cargo +nightly fuzz run "${flags[@]}" "$target" -- \
        -max_total_time="$budget" -max_len=4096 >"$log" 2>&1; then
        grep -E '^(Done|#[0-9]+ *DONE)' "$log" | tail -n 1 || tail -n 3 "$log"
        rm -f "$log"
    else
        tail -n 60 "$log"
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/"
        exit 1
    fi
done
