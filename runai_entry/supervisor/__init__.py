"""One attempt under supervision: spawn, the loop, the stop's delivery, exit codes, the checkpoint
directory before and after."""
