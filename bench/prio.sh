#!/bin/bash
# Runs a benchmark command with the CPU share of a dedicated machine on a shared one:
# in a session of its own (so, with the kernel's autogroup scheduling, its own scheduler group)
# whose autogroup nice is -10, the command itself at nice -10. Other users' builds in other
# sessions keep running, at a lower share, while it runs. Needs root (negative nice values).
#
#   bench/prio.sh target/release/parkd-bench availability --out bench/results/availability.md
#
# Reports say so in their header ("Scheduling: ..."). Without autogroups
# (/proc/sys/kernel/sched_autogroup_enabled = 0) only the nice value applies.
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: bench/prio.sh COMMAND [ARGS...]" >&2
    exit 2
fi
exec setsid --wait bash -c '
    if [ -w /proc/self/autogroup ]; then echo -10 > /proc/self/autogroup || true; fi
    exec nice -n -10 "$@"' prio "$@"
