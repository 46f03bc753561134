"""The command line: turns argv into a Config and hands it to run. No behaviour lives here.

``runai-entry [OPTIONS] [--] COMMAND [ARG...]``. When no option precedes the command — the
container form ``ENTRYPOINT ["runai-entry", "--"]`` with settings in the environment — there is
nothing for click to parse, and click is not imported: it would triple runai-entry's start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from runai_entry import __version__
from runai_entry.errors import ConfigError, RunaiEntryError
from runai_entry.signals import block_handled_signals

if TYPE_CHECKING:
    from runai_entry.config import Config

_HELP = {
    "grace_period": "Time the platform allows between SIGTERM and SIGKILL [30s].",
    "kill_margin": "SIGKILL the job this long before the grace period ends, so runai-entry "
    "exits with the right code before the platform kills it [2s].",
    "stop_signal": "Signal the job receives on preemption: SIGTERM, USR1, 10 ... [SIGTERM].",
    "preempt_exit_code": "Exit code after a preemption; 1 makes Run:ai requeue the job [1].",
    "cleanup_timeout": "After the command exits by itself, how long leftover processes get "
    "between SIGTERM and SIGKILL [5s].",
    "simulate_preempt": "Behave exactly as if SIGTERM arrived this long after the start.",
    "log_format": "auto (console on a terminal, JSON lines otherwise), json or console.",
    "log_level": "debug, info, warning or error [info].",
    "checkpoint_dir": "Where the job's checkpoints live (the shared volume).",
    "resume_flag": "Appended with the checkpoint path when one is found; '' disables it "
    "[--resume-from].",
    "checkpoint_glob": "Only names matching this glob are checkpoints.",
    "verify_checkpoints": "Check a checkpoint file's integrity (headers and trailers) before "
    "choosing it; fall back to the previous one [on].",
    "require_network_storage": "Fail, rather than warn, when --checkpoint-dir is on local "
    "storage.",
    "simulate_requeue": "With --simulate-preempt: restart the command this many times, "
    "resuming each time, then let it finish (the preemption drill).",
}
_FLAGS = {"verify_checkpoints", "require_network_storage"}
#: Flags that are on by default, so they need an off switch too.
_ON_BY_DEFAULT = {"verify_checkpoints"}
_METAVARS = {"stop_signal": "SIGNAL", "preempt_exit_code": "N", "simulate_requeue": "N",
             "log_format": "FORMAT", "log_level": "LEVEL", "checkpoint_glob": "GLOB",
             "resume_flag": "TEXT", "checkpoint_dir": "PATH"}  # the rest are durations


def parse(argv: Sequence[str]) -> Config | int:
    """argv (without the program name) → Config, or an exit code after --help/--version."""
    from runai_entry import config as configuration

    args = list(argv)
    if args and (args[0] == "--" or not args[0].startswith("-")):
        return configuration.load(args[1:] if args[0] == "--" else args)
    return _parse_with_click(args)


def _parse_with_click(args: list[str]) -> Config | int:
    import click

    from runai_entry import config as configuration

    @click.command(
        context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]},
        help="Run COMMAND as a preemptible training job: forward signals, time the grace "
        "window, wait for every job process to save, exit 1 on preemption so the job is "
        "requeued, and resume from the newest complete checkpoint. Every option is also a "
        "YAML key (grace_period) and an environment variable (RUNAI_ENTRY_GRACE_PERIOD); "
        "precedence: flag > environment > file > default.",
    )
    @click.option("--config", "config", metavar="PATH",
                  help="YAML file of options (env RUNAI_ENTRY_CONFIG).")
    @click.option("--inspect", is_flag=True, default=None,
                  help="Show the attempt history and the checkpoint the next attempt would "
                  "resume from, then exit; runs no command.")
    # The version is written once, in runai_entry/__init__.py; pyproject reads it from there.
    @click.version_option(version=__version__, prog_name="runai-entry")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[--] COMMAND [ARG...]")
    def command(command: tuple[str, ...], **flags: Any) -> Config:
        return configuration.load(command, {k: v for k, v in flags.items() if v is not None})

    for key in configuration.PARSERS:
        if key in _FLAGS:
            name = configuration.flag_name(key)
            if key in _ON_BY_DEFAULT:
                name = f"{name}/--no-{name[2:]}"
            option = click.option(name, key, is_flag=True, default=None, help=_HELP[key])
        else:
            option = click.option(configuration.flag_name(key), key,
                                  metavar=_METAVARS.get(key, "DURATION"), help=_HELP[key])
        command = option(command)

    try:
        result = command.main(args, prog_name="runai-entry", standalone_mode=False)
    except click.UsageError as exc:
        raise ConfigError(f"{exc.format_message()} (see runai-entry --help)") from None
    except click.Abort:
        return 130
    return result  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``runai-entry`` console script and ``python -m runai_entry``."""
    block_handled_signals()  # before anything else: see its docstring
    try:
        parsed = parse(sys.argv[1:] if argv is None else argv)
        if isinstance(parsed, int):
            code = parsed
        else:
            from runai_entry.run import run

            code = run(parsed)
    except RunaiEntryError as exc:
        print(f"runai-entry: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:  # ^C during --inspect, the one path that gives signals back
        code = 130
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # the reader went away; the exit code still matters
            pass
    # As PID 1 our exit ends the container; interpreter teardown (hundreds of imported modules)
    # would only delay the exit code the platform is waiting for.
    os._exit(code)
