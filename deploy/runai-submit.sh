#!/usr/bin/env bash
# Run:ai submit lines for runai-entry (docs/deployment.md). Run:ai requeues a job whose pod exits
# non-zero, up to --backoff-limit times, and knows no podFailurePolicy: so every preemption uses
# one retry, and the limit must cover the preemptions you expect plus a few real crashes. Keep
# runai-entry's default preempt exit code, 1, which the Run:ai guide asks for.
# --termination-grace-period must equal runai-entry's --grace-period.
set -euo pipefail

# runai-entry in the command, for an image you do not control.
runai submit train-with-checkpoints -i registry.example.com/me/digits:1 -g 1 \
    -v /mnt/nfs_share/john:/ckpt \
    --backoff-limit 20 --termination-grace-period 60s \
    --command -- runai-entry --checkpoint-dir /ckpt --grace-period 60s \
        -- python examples/train_pytorch.py --epochs 50

# runai-entry as the image's ENTRYPOINT, configured through the environment.
runai submit train-with-checkpoints-env -i registry.example.com/me/digits:1 -g 1 \
    -v /mnt/nfs_share/john:/ckpt \
    --backoff-limit 20 --termination-grace-period 60s \
    -e RUNAI_ENTRY_CHECKPOINT_DIR=/ckpt -e RUNAI_ENTRY_GRACE_PERIOD=60s \
    -- python examples/train_pytorch.py --epochs 50
