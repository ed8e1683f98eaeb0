#!/usr/bin/env bash
# The issue-18 measurements, in one run, on the commit checked out in /work/wt/lead.
set -u
OUT=${OUT:-/tmp/issue18}
mkdir -p $OUT
M=${M:-$PWD}
B=${B:?a checkout of 078721f with its .venv}
cd $M
stamp() { echo "=== $1 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
run() { local name=$1; shift; stamp $name >> $OUT/$name.txt; timeout 900 "$@" >> $OUT/$name.txt 2>&1; }
run prod30_a $M/.venv/bin/python -m tests.bench.e2e_load --production --rate 30 --chats 300 --messages 4
run burst $M/.venv/bin/python -m tests.bench.e2e_load --production --rate 30 --chats 300 --messages 4 --burst 100:20
run prod30_b $M/.venv/bin/python -m tests.bench.e2e_load --production --rate 30 --chats 300 --messages 4
for i in 1 2; do
  run rep1_cap $M/.venv/bin/python -m tests.bench.e2e_load --rate 0 --webhook --replicas 1 --replica-cpu 0.25 --chats 200 --messages 3
  run rep2_cap $M/.venv/bin/python -m tests.bench.e2e_load --rate 0 --webhook --replicas 2 --replica-cpu 0.25 --chats 200 --messages 3
done
run rep1 $M/.venv/bin/python -m tests.bench.e2e_load --rate 0 --webhook --replicas 1 --chats 200 --messages 3
run rep2 $M/.venv/bin/python -m tests.bench.e2e_load --rate 0 --webhook --replicas 2 --chats 200 --messages 3
for i in 1 2 3; do
  run embedded_main $M/.venv/bin/python -m tests.bench.e2e_load --chats 300
  (cd $B && run embedded_base $B/.venv/bin/python -m tests.bench.e2e_load --chats 300)
done
run tracing $M/.venv/bin/python -m tests.bench.tracing_cost --pairs 3
stamp done >> $OUT/done.txt
