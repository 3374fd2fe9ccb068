#!/usr/bin/env bash
# Quickstart (1 process, 2 threads) and the same run under torchrun (2 gloo processes, 1 thread each) on the CPU,
# with the background benchmark paused (SIGSTOP) so both have the 2 cores to themselves.
PIDS="$*"
trap 'kill -CONT $PIDS 2>/dev/null' EXIT
kill -STOP $PIDS
sleep 2
cd /work/bench-runs/scaling && rm -rf q1 q2
/usr/bin/time -v kdcli distill --preset quickstart --out q1 > q1.out 2> q1.err
OMP_NUM_THREADS=1 /usr/bin/time -v torchrun --nproc-per-node 2 -m kdcli distill --preset quickstart --out q2 > q2.out 2> q2.err
