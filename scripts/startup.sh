#!/bin/sh
# The Run:ai quickstart's startup.sh, done right.
#
#   runai submit train -i IMAGE -v /mnt/nfs_share/john:/ckpt -g 1 \
#       --command -- ./startup.sh python train.py --epochs 50
#
# Theirs backgrounds python and traps SIGTERM with `kill 0; wait`: a crashed trainer exits 0
# (a bare `wait` returns 0, so the failed job is marked Succeeded and never retried), and a
# preempted one exits 143 instead of the 1 that requeues it. Here the shell only prepares, then
# `exec` replaces it with runai-entry, which becomes PID 1 and does the rest: it forwards the
# stop signal to every process, waits for the save, exits 1 on preemption, and passes the job
# the newest complete checkpoint. Configure it with RUNAI_ENTRY_* variables
# (RUNAI_ENTRY_CHECKPOINT_DIR=/ckpt, RUNAI_ENTRY_GRACE_PERIOD=30s, ...).
set -eu

if [ "$#" -eq 0 ]; then
    echo "startup.sh: usage: startup.sh COMMAND [ARG...]" >&2
    exit 2
fi

# A failed install must fail the job, not start training without its dependencies.
requirements="${REQUIREMENTS:-requirements.txt}"
if [ -f "$requirements" ]; then
    python -m pip install --no-cache-dir --disable-pip-version-check -r "$requirements"
fi

exec runai-entry -- "$@"
