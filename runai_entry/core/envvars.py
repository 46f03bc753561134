"""Names of the environment variables runai-entry sets for the job and the library reads.

This module imports nothing: the training-side library and the supervisor share these names, and
the library must cost nothing at import.
"""

PREFIX = "RUNAI_ENTRY_"

#: Seconds the platform allows between SIGTERM and SIGKILL (``--grace-period``).
GRACE_PERIOD = PREFIX + "GRACE_PERIOD"
#: Seconds from the stop signal to runai-entry's own SIGKILL: grace period minus kill margin.
STOP_TIMEOUT = PREFIX + "STOP_TIMEOUT"
#: The signal the job receives on preemption, as a name (``SIGTERM``, ``SIGUSR1``).
STOP_SIGNAL = PREFIX + "STOP_SIGNAL"
#: The checkpoint directory (``--checkpoint-dir``), when one is configured.
CHECKPOINT_DIR = PREFIX + "CHECKPOINT_DIR"
#: The newest complete checkpoint, set only when one was found.
RESUME_FROM = PREFIX + "RESUME_FROM"
#: 1 on the first run against a checkpoint directory, +1 on each later run.
ATTEMPT = PREFIX + "ATTEMPT"
#: Where each job process keeps its heartbeat file (tmpfs), set only while the watchdog is on.
HEARTBEAT_DIR = PREFIX + "HEARTBEAT_DIR"

#: runai-entry's state directory inside the checkpoint directory (hidden: discovery skips it).
STATE_DIR = ".runai-entry"
#: Written there by the Checkpointer at its first save: the measured save speed against the stop
#: budget, which the attempt history keeps and the drill's verdict reads.
SAVE_ESTIMATE_FILE = "save-estimate.json"

#: A random token in every job process's environment, inherited in whatever session it runs:
#: how the guardian finds the job after a SIGKILLed runai-entry
#: (runai_entry/supervisor/guardian.py).
JOB_TOKEN = PREFIX + "JOB_TOKEN"
