#!/bin/sh
# Resume a script whose resume switch takes no path (nanoGPT: --init_from=resume), when
# runai-entry found a checkpoint; run with --resume-flag ''. Usage: resume_wrapper.sh CMD [ARG...]
if [ -n "$RUNAI_ENTRY_RESUME_FROM" ]; then
    exec "$@" --init_from=resume
fi
exec "$@"
