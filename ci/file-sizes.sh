#!/usr/bin/env bash
# Lists every non-test Rust source file under backends/ longer than LIMIT lines (default
# 400) and exits non-zero if there is one.
#
# What counts: a file's lines outside its test modules. Not counted:
# - files under a `tests/` directory (integration tests);
# - inline modules under a test-only cfg (`#[cfg(test)]`, `#[cfg(all(test, ...))]`), from
#   the attribute to the module's closing brace (as rustfmt lays them out: the `}` alone at
#   the module's indentation);
# - files of modules declared under such a cfg (`#[cfg(test)] mod tests;` in `map.rs`
#   makes `map/tests.rs` a test file; in `mod.rs` or `lib.rs` it is `tests.rs` beside it or
#   `tests/mod.rs`), and every file below them.
#
# Usage: ci/file-sizes.sh [LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
limit="${1:-400}"

# Tracked files and new ones not ignored, so that the check sees a change before its commit.
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- 'backends/*.rs' |
    grep -v '/tests/' | sort -u)

# A cfg whose condition needs `test`: `test` itself, or `all(...)` with `test` among its
# arguments (not `any(test, ...)`, nor `all(not(test), ...)`).
test_cfg='^[[:space:]]*#[[]cfg[(](test|all[(](.*, )?test[,)].*)[)][]][[:space:]]*$'

# The files of test-only modules declared in `file`, one path a line (a path may not exist).
test_children() {
    local file="$1" dir stem
    dir="$(dirname "$file")"
    stem="$(basename "$file" .rs)"
    case "$stem" in
    mod | lib | main) ;;
    *) dir="$dir/$stem" ;;
    esac
    awk -v re="$test_cfg" '
        $0 ~ re { armed = 1; next }
        armed && /^[[:space:]]*#[[]/ { next }
        armed && match($0, /^[[:space:]]*(pub([(][a-z]+[)])? )?mod [A-Za-z0-9_]+;/) {
            name = $0
            sub(/^[[:space:]]*(pub([(][a-z]+[)])? )?mod /, "", name)
            sub(/;.*/, "", name)
            print name
        }
        { armed = 0 }
    ' "$file" | while read -r name; do
        echo "$dir/$name.rs"
        echo "$dir/$name/mod.rs"
    done
}

# Lines of `file` outside inline test-only modules.
counted_lines() {
    awk -v re="$test_cfg" '
        skipping {
            if ($0 == close_line) skipping = 0
            next
        }
        $0 ~ re { pending = pending + 1; held[pending] = $0; next }
        pending && /^[[:space:]]*#[[]/ { pending = pending + 1; held[pending] = $0; next }
        pending && match($0, /^[[:space:]]*(pub([(][a-z]+[)])? )?mod [A-Za-z0-9_]+ [{]$/) {
            indent = $0
            sub(/[^[:space:]].*$/, "", indent)
            close_line = indent "}"
            skipping = 1
            pending = 0
            next
        }
        pending { count += pending; pending = 0 }
        { count++ }
        END { print count + pending }
    ' "$1"
}

declare -A test_file=()
for file in "${files[@]}"; do
    while read -r child; do
        test_file["$child"]=1
    done < <(test_children "$file")
done

over=0
for file in "${files[@]}"; do
    # A file below a test-only module's directory is test code too.
    skip=0
    for t in "${!test_file[@]}"; do
        case "$file" in
        "$t" | "${t%.rs}"/* | "${t%/mod.rs}"/*) skip=1 ;;
        esac
    done
    [ "$skip" = 1 ] && continue
    n="$(counted_lines "$file")"
    if [ "$n" -gt "$limit" ]; then
        printf '%6d %s\n' "$n" "$file"
        over=$((over + 1))
    fi
done

if [ "$over" -gt 0 ]; then
    echo "file-sizes: $over non-test source file(s) under backends/ over $limit lines" >&2
    exit 1
fi
echo "file-sizes: no non-test source file under backends/ over $limit lines"
