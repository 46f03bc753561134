"""A training script of one of the shapes runai-entry's resume flag must fit, chosen by
``STANDIN_SHAPE`` (so that the choice is not in the argv the tests compare):

- ``nanogpt``: nanoGPT's configurator: ``--key=value`` only (a bare argument is a config file,
  as in nanoGPT), ``--init_from=resume`` reads its own ``out_dir/ckpt.pt``, rewritten in place;
- ``argparse``: ``--resume PATH`` (or ``--resume=PATH``), after a ``chdir`` (a relative path
  would break);
- ``hf``: the Hugging Face Trainer's ``--resume_from_checkpoint DIR``, a ``checkpoint-N/``.

Prints ``got <json>`` (its argv, the path it resumes from, the two variables). Fresh, it saves
and then fails (exit 3) or, with ``STANDIN_WAIT``, waits to be stopped; resumed, it checks the
checkpoint and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time

shape = os.environ["STANDIN_SHAPE"]
args = sys.argv[1:]
if shape == "nanogpt":
    config = {"out_dir": "out", "init_from": "scratch"}
    for arg in args:
        if not arg.startswith("--"):  # nanoGPT exec()s it as a config file
            sys.exit(f"config file {arg!r}: not a configuration (a path where --key=value was due)")
        key, value = arg[2:].split("=", 1)
        assert key in config, f"unknown config key {key!r}"
        config[key] = value
    checkpoint = os.path.join(config["out_dir"], "ckpt.pt")
    resume = checkpoint if config["init_from"] == "resume" else None
else:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resume" if shape == "argparse" else "--resume_from_checkpoint",
                        dest="resume")
    parser.add_argument("--out", default=os.environ.get("RUNAI_ENTRY_CHECKPOINT_DIR", "."))
    options = parser.parse_args(args)
    resume = options.resume
    checkpoint = os.path.join(options.out, "step-7.pt" if shape == "argparse" else "checkpoint-7")
    os.chdir("/")  # a script that changes directory: only an absolute path still works

print("got " + json.dumps({
    "argv": args, "resume": resume,
    "RUNAI_ENTRY_RESUME_FROM": os.environ.get("RUNAI_ENTRY_RESUME_FROM"),
    "RUNAI_ENTRY_CHECKPOINT_DIR": os.environ.get("RUNAI_ENTRY_CHECKPOINT_DIR")}), flush=True)
if resume:
    if shape == "hf":
        with open(os.path.join(resume, "trainer_state.json")) as f:
            step = json.load(f)["global_step"]
    else:
        with open(resume, "rb") as f:
            step = pickle.load(f)["step"]
    assert step == 7, step
    sys.exit(0)
if shape == "hf":
    os.makedirs(checkpoint)
    with open(os.path.join(checkpoint, "trainer_state.json"), "w") as f:
        json.dump({"global_step": 7}, f)
else:
    os.makedirs(os.path.dirname(checkpoint) or ".", exist_ok=True)
    with open(checkpoint, "wb") as f:  # in place, as nanoGPT's torch.save does
        pickle.dump({"step": 7}, f)
print("saved", flush=True)
if os.environ.get("STANDIN_WAIT"):
    time.sleep(120)  # no handler: the stop signal's default action ends it, as it ends nanoGPT
sys.exit(3)
