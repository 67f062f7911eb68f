#!/usr/bin/env python3
"""Summarises the files benches/peer/profile.sh wrote into OUT, as markdown on stdout.

    benches/peer/profile-summary.py OUT [--top N]
    benches/peer/profile-summary.py --buckets OUT1 OUT2 ...

Per server and cell: messages of the measured window, server CPU per message (perf's
task-clock over those messages), syscalls, io_uring SQEs and CQEs and allocations per
message, the shares of the samples by kind (user, kernel, copies, locks and atomics), and
the top N symbols by self and by children (with inlined frames) share.

With --buckets: one table over several OUT folders (repetitions of the same runs), the
median per server and cell of CPU per message and of the samples' shares by bucket.
"""

import glob
import os
import re
import sys

COPY_USER = re.compile(r"memmove|memcpy|extend_from_slice|copy_from_slice")
COPY_KERNEL = re.compile(r"_copy_to_iter|_copy_from_iter|copy_user|rep_movs|memcpy_orig|memmove")
LOCK = re.compile(
    r"mutex|futex|Mutex|lock_contended|pthread_|spin_lock|spin_unlock|atomic|_raw_spin|lll_"
)
WRAPPER = re.compile(
    r"catch_unwind|call_once|thread_start|clone3|start_thread|__rust_begin_short_backtrace|"
    r"spawn_unchecked|runtime::spawn|^main$|lang_start|__libc_start"
)
USER_LOCK = re.compile(r"mutex|futex|Mutex|pthread_|lll_|atomic|Atomic")


def parse_load(path):
    msgs = []
    for line in open(path):
        m = re.search(r"\((\d+) messages in ([\d.]+) s\)", line)
        if m:
            msgs.append(int(m.group(1)))
    return msgs


def parse_stat(path):
    out = {}
    for line in open(path):
        parts = line.strip().split(",")
        if len(parts) < 3 or line.startswith("#"):
            continue
        try:
            out[parts[2]] = float(parts[0])
        except ValueError:
            pass
    return out


def parse_counters(path):
    rows = []
    for line in open(path):
        rows.append(dict(kv.split("=") for kv in line.split()[1:]))
    if len(rows) < 2:
        return {}
    a, b = rows[0], rows[1]
    return {k: int(b[k]) - int(a[k]) for k in a}


def parse_report(path):
    rows = []
    for line in open(path):
        if line.startswith("#"):
            continue
        m = re.match(r"\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?\[(.)\]\s+(.*)$", line.rstrip())
        if m:
            rows.append((float(m.group(1)), m.group(3), m.group(4).strip()))
    return rows


def short(sym, width=110):
    sym = re.sub(r"<([^<>]*)>", r"<\1>", sym)
    return sym if len(sym) <= width else sym[: width - 3] + "..."


IO_URING_K = re.compile(r"^_*io_|^io_uring|^tctx_|^task_work_run")
EPOLL_K = re.compile(r"^ep_|epoll|^__pollwait|^sock_poll|^tcp_poll")
# (name, test on (kind, symbol)), first match wins.
BUCKETS = [
    ("user copy", lambda k, s: k == "." and COPY_USER.search(s)),
    ("user other", lambda k, s: k == "."),
    ("kernel recv copy", lambda k, s: k == "k" and "_copy_to_iter" in s),
    ("kernel send copy", lambda k, s: k == "k" and "_copy_from_iter" in s),
    ("io_uring", lambda k, s: k == "k" and IO_URING_K.search(s)),
    ("epoll", lambda k, s: k == "k" and EPOLL_K.search(s)),
    ("irq-restore", lambda k, s: k == "k" and "irqrestore" in s),
    ("kernel other", lambda k, s: True),
]


def median(xs):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def buckets(dirs):
    tags = sorted(
        {os.path.basename(p)[: -len(".load")] for d in dirs for p in glob.glob(os.path.join(d, "*.load"))},
        key=lambda t: (int(t.rsplit("-", 1)[1].split("x")[0]), t),
    )
    names = [b[0] for b in BUCKETS]
    print("| server, cell | runs | CPU us/msg (min-max) | syscalls/msg | " + " | ".join(f"{n} %" for n in names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    rows_abs = []
    for tag in tags:
        cpus, sysc, shares, abs_ = [], [], {n: [] for n in names}, {n: [] for n in names}
        for d in dirs:
            base = os.path.join(d, tag)
            if not os.path.exists(base + ".self"):
                continue
            msgs = parse_load(base + ".load")
            st = parse_stat(base + ".stat")
            if msgs and "task-clock" in st:
                cpus.append(st["task-clock"] * 1000 / msgs[0])
                sysc.append(st.get("raw_syscalls:sys_enter", 0) / msgs[0])
            acc = {n: 0.0 for n in names}
            for p, k, sym in parse_report(base + ".self"):
                for n, test in BUCKETS:
                    if test(k, sym):
                        acc[n] += p
                        break
            for n in names:
                shares[n].append(acc[n])
                if msgs and "task-clock" in st:
                    abs_[n].append(acc[n] / 100 * st["task-clock"] * 1000 / msgs[0])
        if not cpus:
            continue
        print(
            f"| {tag} | {len(cpus)} | {median(cpus):.2f} ({min(cpus):.2f}-{max(cpus):.2f}) | {median(sysc):.4f} | "
            + " | ".join(f"{median(shares[n]):.1f}" for n in names)
            + " |"
        )
        rows_abs.append((tag, abs_))
    print("\nThe same buckets in microseconds of server CPU per message (median over the runs of")
    print("share x that run's CPU per message; as noisy as CPU per message itself):\n")
    print("| server, cell | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for tag, abs_ in rows_abs:
        print(f"| {tag} | " + " | ".join(f"{median(abs_[n]):.2f}" for n in names) + " |")


def main():
    args = sys.argv[1:]
    if args and args[0] == "--buckets":
        buckets(args[1:])
        return
    top = 25
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i : i + 2]
    out = args[0]
    tags = sorted(
        {os.path.basename(p)[: -len(".load")] for p in glob.glob(os.path.join(out, "*.load"))},
        key=lambda t: (int(t.rsplit("-", 1)[1].split("x")[0]), t),
    )
    print("| server, cell | msgs | CPU us/msg | syscalls/msg | SQEs/msg | CQEs/msg | allocs/msg | user % | kernel % | copies % (user / kernel) | locks+atomics % (user / kernel) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    details = []
    for tag in tags:
        base = os.path.join(out, tag)
        msgs = parse_load(base + ".load")
        if not msgs:
            continue
        n = msgs[0]
        st = parse_stat(base + ".stat")
        ct = parse_counters(base + ".counters")
        selfrows = parse_report(base + ".self")
        user = sum(p for p, k, _ in selfrows if k == ".")
        kern = sum(p for p, k, _ in selfrows if k == "k")
        cu = sum(p for p, k, s in selfrows if k == "." and COPY_USER.search(s))
        ck = sum(p for p, k, s in selfrows if k == "k" and COPY_KERNEL.search(s))
        lu = sum(p for p, k, s in selfrows if k == "." and USER_LOCK.search(s))
        lk = sum(p for p, k, s in selfrows if k == "k" and LOCK.search(s))
        per = lambda v: v / n if n else float("nan")
        cpu = st.get("task-clock", float("nan")) * 1000 / n
        sys_ = per(st.get("raw_syscalls:sys_enter", 0))
        sqe = per(st.get("io_uring:io_uring_submit_req", 0))
        cqe = per(st.get("io_uring:io_uring_complete", 0))
        allocs = per(ct.get("allocs", 0))
        print(
            f"| {tag} | {n} | {cpu:.2f} | {sys_:.4f} | {sqe:.4f} | {cqe:.4f} | {allocs:.5f} | "
            f"{user:.1f} | {kern:.1f} | {cu:.1f} / {ck:.1f} | {lu:.1f} / {lk:.1f} |"
        )
        details.append((tag, n, st, ct, base))
    print()
    print("Shares are of the server's cpu-clock samples (self), every symbol; the")
    print("user/kernel split and the copy and lock shares sum symbols by name.")
    for tag, n, st, ct, base in details:
        print(f"\n### {tag}\n")
        calls = {
            k.split("sys_enter_")[1]: v / n
            for k, v in st.items()
            if "sys_enter_" in k and v > 0
        }
        print(
            "syscalls per message: "
            + ", ".join(f"{k} {v:.4f}" for k, v in sorted(calls.items(), key=lambda x: -x[1]))
        )
        extra = {
            k: v / n
            for k, v in st.items()
            if k.startswith("io_uring:") or k == "context-switches"
        }
        if extra:
            print("\nper message: " + ", ".join(f"{k} {v:.4f}" for k, v in extra.items() if v))
        if ct:
            size = int(tag.rsplit("x", 2)[1])
            shown = {k: v for k, v in ct.items() if v}
            by_bytes = (
                f" (messages by bytes out: {ct['bytes_out'] // size})" if "bytes_out" in ct else ""
            )
            print(
                f"\nserver counters over the window{by_bytes}: "
                + ", ".join(f"{k} {v} ({v / n:.4f}/msg)" for k, v in shown.items() if not k.startswith("bytes"))
            )
        for kind, path in (("self", ".self"), ("children", ".children")):
            rows = parse_report(base + path)
            if kind == "children":
                # The thread's start-up frames (100 % each) say nothing.
                rows = [r for r in rows if not WRAPPER.search(r[2])]
            print(f"\ntop {top} by {kind}:\n")
            print("| % | | symbol |\n|---|---|---|")
            for p, k, s in rows[:top]:
                print(f"| {p:.2f} | {k} | `{short(s)}` |")


if __name__ == "__main__":
    main()
