#!/usr/bin/env bash
# AddressSanitizer (and LeakSanitizer) over the code with `unsafe`: the core (buffer pool,
# connection map) and both drivers, their unit and integration tests; then the facade
# tests that drive paused connections, receive-buffer exhaustion and the hostile cases
# through the io_uring and mio drivers. Nightly, an explicit --target (so the sanitizer
# flags reach only the target, not build scripts), its own target dir; the standard
# library is not rebuilt (no -Zbuild-std needed for tests). Doc tests are skipped: rustdoc
# would need the same flags and they hold no unsafe code.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
target=x86_64-unknown-linux-gnu
common=(+nightly test --target "$target" --target-dir target/asan)
cargo "${common[@]}" -p ringmill-core -p ringmill-mio -p ringmill-uring --lib --tests
# The loop-thread spawn failure test caps the child's address space (RLIMIT_AS) just above
# what it uses; AddressSanitizer's shadow memory cannot live under such a cap, so that one
# test runs in the ordinary builds only.
cargo "${common[@]}" -p ringmill --test hostile --test pause -- \
    --skip loop_thread_spawn_failure_is_an_error_from_build
