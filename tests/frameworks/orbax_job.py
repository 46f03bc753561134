"""A tiny JAX job checkpointed by an Orbax CheckpointManager, saving on runai-entry's stop signal.
Prints ``start <step>`` and ``finished <step>``. ``--die-mid-save`` saves step 20, then starts
an async save of a large step and SIGKILLs itself while it is being written."""

from __future__ import annotations

import os
import signal
import sys
import time

from runai_entry.training import preemption

FLAG = preemption()

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

directory = os.path.abspath(os.environ.get("RUNAI_ENTRY_CHECKPOINT_DIR") or sys.argv[2])
total = int(sys.argv[1])
manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=3))
state = {"w": jnp.zeros(8), "step": jnp.array(0)}
resume = os.environ.get("RUNAI_ENTRY_RESUME_FROM")
if resume:
    state = manager.restore(int(os.path.basename(resume)), args=ocp.args.StandardRestore(state))
step = int(state["step"])
print(f"start {step}", flush=True)

if "--die-mid-save" in sys.argv:
    manager.save(20, args=ocp.args.StandardSave({"w": jnp.ones(8), "step": jnp.array(20)}))
    manager.wait_until_finished()
    big = {"w": np.ones(50_000_000, dtype=np.float32), "step": np.array(10**6)}  # 200 MB
    manager.save(10**6, args=ocp.args.StandardSave(big))
    os.kill(os.getpid(), signal.SIGKILL)

while step < total:
    time.sleep(0.05)
    step += 1
    state = {"w": state["w"] + 1, "step": jnp.array(step)}
    if FLAG or step % 50 == 0:
        manager.save(step, args=ocp.args.StandardSave(state))
        if FLAG:
            manager.wait_until_finished()  # the async save must end inside the grace period
            sys.exit(1)
if manager.latest_step() != step:
    manager.save(step, args=ocp.args.StandardSave(state), force=True)
manager.wait_until_finished()
print(f"finished {step}", flush=True)
