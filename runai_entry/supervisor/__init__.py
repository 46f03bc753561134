"""One attempt under supervision: the checkpoint directory before it, the spawn, the loop and the
stop's delivery, the watchdog, job-wide preemption, exit codes, and what it leaves behind."""
