#!/usr/bin/env bash
# Profiles one echo server of the peer comparison in one cell, as PROFILE.md reports it.
#
#   benches/peer/profile.sh OUT KIND CONNS SIZE DEPTH [PORT [MODE]]
#
# KIND: ringmill-uring, ringmill-mio, plain-mio (or any server kind of `server --help`).
# MODE: `blocking` for the thread-per-connection client (default: the mio client).
# Builds nothing: run `cargo build --release --manifest-path benches/peer/Cargo.toml` first.
# Needs perf with access to tracepoints and kernel samples (root, or perf_event_paranoid -1).
#
# Starts `server KIND PORT` pinned to CPU 0 and, twice, the load generator alone
# (`load 127.0.0.1:PORT CONNS SIZE DEPTH`: 1 s warm-up, 3 s measured window) pinned to CPU 1:
#
# 1. counting: over the load's measured window (its PEER_WINDOW_START/END hooks),
#    `perf stat` counts the server's syscalls (all, and the ones a loop uses, one by one),
#    io_uring SQEs submitted and CQEs posted, and its CPU time; the server's own counters
#    (allocations; ringmill: driver counters and bytes out) are read at the window's start
#    and end through its stdin (`counters`). The load prints the messages of the window.
# 2. sampling: over the second load's window, `perf record -e cpu-clock --call-graph
#    dwarf` samples the server; the flat profile (self) and the children profile are
#    written as text.
#
# Writes OUT/KIND-CONNSxSIZExDEPTH.{stat,counters,load,self,children,perf.data}; summarise
# with benches/peer/profile-summary.py OUT. Each run puts about 10 s of load on the machine.
set -euo pipefail

out=$1 kind=$2 conns=$3 size=$4 depth=$5 port=${6:-17000} mode=${7:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/benches/peer/target/release/ringmill-peer-bench
[ -x "$bin" ] || { echo "build first: cargo build --release --manifest-path benches/peer/Cargo.toml" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
tag=$out/$kind-${mode:+$mode-}${conns}x${size}x${depth}
work=$(mktemp -d)
spid=
trap 'exec 3>&- 2>/dev/null || true; [ -n "$spid" ] && kill "$spid" 2>/dev/null || true; rm -rf "$work"' EXIT

mkfifo "$work/ctl"
taskset -c 0 "$bin" server "$kind" "$port" <"$work/ctl" >"$work/server.out" 2>&1 &
spid=$!
exec 3>"$work/ctl"
for _ in $(seq 100); do grep -q READY "$work/server.out" && break; sleep 0.05; done
grep -q READY "$work/server.out" || { cat "$work/server.out" >&2; exit 1; }

events=task-clock,context-switches,raw_syscalls:sys_enter
for sc in read write recvfrom sendto sendmsg readv writev epoll_wait io_uring_enter futex; do
    events+=,syscalls:sys_enter_$sc
done
events+=,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_task_work_run,io_uring:io_uring_local_work_run,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work

# The hooks run under `sh -c` in the load generator, which inherits fd 3 (the server's
# stdin). perf starts with its events disabled and is enabled and disabled through its
# control fifo (each acknowledged), so it counts the load's measured window and no more.
mkfifo "$work/pctl" "$work/pack"
control="-D -1 --control fifo:$work/pctl,$work/pack"
perf_on="sleep 0.3; echo enable >'$work/pctl'; head -c 4 '$work/pack' >/dev/null"
perf_off="echo disable >'$work/pctl'; head -c 5 '$work/pack' >/dev/null; kill -INT \$(cat '$work/perf.pid'); while kill -0 \$(cat '$work/perf.pid') 2>/dev/null; do sleep 0.02; done"

# 1. counting
export PEER_WINDOW_START="perf stat $control -x, -e '$events' -p $spid -o '$tag.stat' & echo \$! >'$work/perf.pid'; $perf_on; echo counters >&3"
export PEER_WINDOW_END="echo counters >&3; $perf_off"
taskset -c 1 "$bin" load "127.0.0.1:$port" "$conns" "$size" "$depth" $mode >"$tag.load" 2>&1
for _ in $(seq 100); do [ "$(grep -c '^counters' "$work/server.out")" -ge 2 ] && break; sleep 0.01; done
grep '^counters' "$work/server.out" >"$tag.counters"

# 2. sampling
export PEER_WINDOW_START="perf record $control -q -F 4000 -e cpu-clock --call-graph dwarf,16384 -p $spid -o '$tag.perf.data' 2>/dev/null & echo \$! >'$work/perf.pid'; $perf_on"
export PEER_WINDOW_END="$perf_off"
taskset -c 1 "$bin" load "127.0.0.1:$port" "$conns" "$size" "$depth" $mode >>"$tag.load" 2>&1
exec 3>&-
wait "$spid" || true
spid=

perf report -i "$tag.perf.data" --no-children --sort sym -g none --stdio 2>/dev/null \
    | grep -v '^$' >"$tag.self"
perf report -i "$tag.perf.data" --children --sort sym -g none --percent-limit 0.5 --stdio 2>/dev/null \
    | grep -v '^$' >"$tag.children"
echo "wrote $tag.*"
