"""The command line: argv into a Config, then the mode asked for: an attempt, the drill, --inspect.

``runai-entry [OPTIONS] [--] COMMAND [ARG...]``. When no option precedes the command — the
container form ``ENTRYPOINT ["runai-entry", "--"]`` with settings in the environment — there is
nothing for click to parse, and click is not imported: it would triple runai-entry's start-up.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from runai_entry import __version__
from runai_entry.core.errors import EXIT_INTERNAL_ERROR, ConfigError, RunaiEntryError, describe_bug
from runai_entry.core.signals import block_handled_signals

if TYPE_CHECKING:
    from runai_entry.config.loading import Config
    from runai_entry.config.options import Option


def _help(option: Option) -> str:
    """The README's meaning, as click's help: backquotes and links are for Markdown. A link to
    a section of the README says so: --help has no "below"."""
    text = re.sub(r"\[([^\]]+)\]\(#[^)]+\)", r"\1 in README.md", option.meaning)
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text).replace("`", "")
    return f"{text[0].upper()}{text[1:]} [{option.shown.replace('`', '')}]."


def parse(argv: Sequence[str]) -> Config | int:
    """argv (without the program name) → Config, or an exit code after --help/--version."""
    from runai_entry.config import loading as configuration

    args = list(argv)
    if args and (args[0] == "--" or not args[0].startswith("-")):
        return configuration.load(args[1:] if args[0] == "--" else args)
    return _parse_with_click(args)


def _parse_with_click(args: list[str]) -> Config | int:
    import click

    from runai_entry.config import loading as configuration
    from runai_entry.config.options import OPTIONS, flag_name

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

    for opt in OPTIONS:
        name = flag_name(opt.key)
        helptext = _help(opt)
        if opt.metavar is None:  # a switch, with its off form when it is on by default
            name = f"{name}/--no-{name[2:]}" if opt.default_on else name
            option = click.option(name, opt.key, is_flag=True, default=None, help=helptext)
        else:
            option = click.option(name, opt.key, metavar=opt.metavar, help=helptext)
        command = option(command)

    try:
        result = command.main(args, prog_name="runai-entry", standalone_mode=False)
    except click.UsageError as exc:
        raise ConfigError(f"{exc.format_message()} (see runai-entry --help)") from None
    except click.Abort:
        return 130
    return result  # type: ignore[no-any-return]


def _run_mode(config: Config) -> int:
    """The one mode the configuration asks for: look at the directory, drill, or one attempt."""
    if config.inspect:
        from runai_entry.inspection import inspect

        return inspect(config)
    if config.simulate_requeue:
        from runai_entry.drill import drill

        return drill(config)
    from runai_entry.supervisor.attempt import run_attempt

    attempt = run_attempt(config)
    from runai_entry.config.loading import termination_target

    if termination_target(config) is not None:
        from runai_entry.supervisor.termination import leave

        leave(config, attempt)
    return attempt.exit_code


def _leave_error(config: Config | None, error: str, code: int) -> None:
    """The termination message for a run that ended in an error before or instead of the job."""
    from runai_entry.config.loading import termination_target

    if config is not None and not config.inspect and termination_target(config) is not None:
        from runai_entry.supervisor.termination import leave

        leave(config, error=error, exit_code=code)


def reserve_standard_fds() -> None:
    """Open /dev/null onto whichever of fds 0, 1 and 2 is closed, before anything opens one.

    Started with one closed (``<&-`` in a script, a daemon manager that closes them), the next
    descriptor runai-entry opens would land there: a helper's memfd on fd 1 is then written over
    by the job's output, and the helper's report is lost (exit 1, the requeue code, before the job
    ever ran); with fd 2 closed, the first log line raises. Python gives a closed standard stream
    a ``None`` object, so the stream is made anew on the fd it now has.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)  # as good a probe as F_GETFD, without importing fcntl
            continue
        except OSError:  # EBADF: closed
            pass
        opened = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
        setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False,  # noqa: SIM115
                                encoding="utf-8", errors="backslashreplace"))


def _say(line: str) -> None:
    """One line on stderr, if anyone reads it: a stderr whose reader went away (a closed pipe)
    or whose terminal hung up must not turn a clear exit code into a traceback and exit 1."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # EPIPE, EIO: nobody to tell; the exit code still says it
        pass


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``runai-entry`` console script and ``python -m runai_entry``."""
    reserve_standard_fds()  # first: nothing may open a descriptor onto 0-2
    block_handled_signals()  # before anything else that takes time: see its docstring
    config = None
    try:
        parsed = parse(sys.argv[1:] if argv is None else argv)
        config = None if isinstance(parsed, int) else parsed
        code = parsed if isinstance(parsed, int) else _run_mode(parsed)
    except RunaiEntryError as exc:
        _say(f"runai-entry: error: {exc}")
        code = exc.exit_code
        _leave_error(config, str(exc), code)
    except KeyboardInterrupt:  # ^C during --inspect, the one path that gives signals back
        code = 130
    except Exception as exc:  # the last resort: a bug must not exit 1
        # Python's own exit for an uncaught exception is 1, the requeue code: the platform would
        # start the job again and again, each time crashing the same way before it runs.
        _say(f"runai-entry: internal error (a bug in runai-entry, please report it): "
             f"{describe_bug(exc)}")
        code = EXIT_INTERNAL_ERROR
        _leave_error(config, f"internal error: {describe_bug(exc)}", code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # EPIPE: the reader went away; the exit code still matters
            pass
    # As PID 1 our exit ends the container; interpreter teardown (hundreds of imported modules)
    # would only delay the exit code the platform is waiting for.
    os._exit(code)
