"""Every option of runai-entry, once: its key, parser, metavar, default as shown, and meaning.

The key is the YAML key (``grace_period``); the flag (``--grace-period``), the environment
variable (``RUNAI_ENTRY_GRACE_PERIOD``), click's option and help, and the README's options table
all derive from :data:`OPTIONS` (tests/config/test_options.py holds the README and :class:`Config`
to it). Adding an option is one row here and its field in
:class:`~runai_entry.config.loading.Config`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from runai_entry.config import resumeflag
from runai_entry.config.durations import parse_duration
from runai_entry.core import envvars
from runai_entry.core.signals import parse_signal, signal_name


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, bool) and "on" in allowed and "off" in allowed:
            return "on" if value else "off"  # YAML 1.1 reads an unquoted on/off as a boolean
        text = str(value).strip().lower()
        if isinstance(value, bool) or text not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return text

    return parse


def _exit_code(value: Any) -> int:
    code = _integer(value)
    if not 0 <= code <= 255:
        raise ValueError(f"{value!r} is not an exit code (0-255)")
    return code


def _preempt_exit_code(value: Any) -> int:
    code = _exit_code(value)
    if code == 0:
        # The platform reads 0 as "succeeded": a preempted job would be marked done, its work
        # unfinished, and never come back.
        raise ValueError(f"{value!r}: a preempted job exiting 0 counts as succeeded and would "
                         "never be requeued (1 requeues on Run:ai)")
    return code


#: Signals that cannot ask a job to save: KILL and STOP cannot be caught (a SIGKILL "stop"
#: would be recorded as a clean preemption), TSTP/TTIN/TTOU stop the job instead of waking its
#: handler, and CHLD is ignored by default.
_NOT_STOP_SIGNALS = frozenset({"SIGKILL", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGCHLD"})


def _stop_signal(value: Any) -> int:
    signum = parse_signal(value)
    if signal_name(signum) in _NOT_STOP_SIGNALS:
        raise ValueError(f"{value!r}: {signal_name(signum)} cannot be a stop signal (it cannot "
                         "be caught, or it stops the job instead of asking it to save)")
    return signum


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an integer") from None


def _count(value: Any) -> int:
    n = _integer(value)
    if n < 0:
        raise ValueError(f"{value!r} is negative")
    return n


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def _hang_timeout(value: Any) -> float | str | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    seconds = _optional_duration(value)
    if seconds == 0:
        raise ValueError(f"{value!r}: a hang timeout must be positive (or off, or auto)")
    return seconds


def _optional_exit_code(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() in ("", "preempt"):
        return None
    return _exit_code(value)


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError(f"{value!r} must be more than 0")
    return seconds


def _optional_duration(value: Any) -> float | None:
    if value is False:  # YAML 1.1 reads an unquoted `off` as false
        return None
    if isinstance(value, str) and value.strip().lower() in ("off", "none"):
        return None
    return parse_duration(value)


def _text_or_empty(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a string")
    text = str(value)
    if "\0" in text:  # YAML can write one ("\x00"); no path or argument can hold it
        raise ValueError(f"{value!r} contains a NUL character")
    return text


def _termination_log(value: Any) -> str | None:
    if value is False:  # YAML 1.1 reads an unquoted `off` as false
        return None
    text = _text_or_empty(value)
    if text.strip().lower() in ("", "off", "none"):
        return None
    return "auto" if text.strip().lower() == "auto" else text


def _text(value: Any) -> str:
    # Empty is refused rather than read as "unset": `--checkpoint-dir "$DIR"` with DIR unset
    # would otherwise run without checkpoints and say nothing.
    text = _text_or_empty(value)
    if not text:
        raise ValueError("an empty value (leave the option out instead)")
    return text


class Address(NamedTuple):
    """Where a server listens."""

    host: str
    port: int


def _listen_address(value: Any) -> Address:
    """``PORT`` (every address) or ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    text = _text(value).strip()
    host, _, port = text.rpartition(":")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not a port (1-65535) or HOST:PORT")
    return Address(host.strip("[]") or "0.0.0.0", int(port))


def _push_url(value: Any) -> str:
    text = _text(value).strip()
    scheme, separator, rest = text.partition("://")
    host = rest if separator else text
    if (separator and scheme.lower() not in ("http", "https")) or not host.strip("/"):
        raise ValueError(f"{value!r} is not a Pushgateway URL (http://HOST:PORT)")
    return text
def _directory(value: Any) -> str:
    # Absolute: the job gets it (RUNAI_ENTRY_CHECKPOINT_DIR, the resume path) and may change
    # directory before it reads it; runai-entry's working directory is the one the user meant.
    text = _text(value)
    try:
        return os.path.abspath(text)
    except OSError as exc:  # a relative path, and our working directory was removed
        raise ValueError(f"{text!r} is relative, and the working directory it is relative to "
                         f"cannot be read ({exc.strerror or exc})") from None


def _resume_flag(value: Any) -> str:
    return resumeflag.check(_text_or_empty(value))


class Option(NamedTuple):
    """One option. ``metavar`` None: a switch (``--flag``, and ``--no-flag`` when ``default`` is
    on). ``shown``: the default as a person reads it. ``empty_is_value``: an empty variable
    means the empty string, not "unset". ``parse`` gets a str, int, float or bool
    (config/loading.py refuses YAML's other types, and any value over 4096 characters, before
    it) and raises ValueError only: tests/config/test_types.py feeds every option every kind of
    value."""

    key: str
    parse: Callable[[Any], Any]
    metavar: str | None
    shown: str
    meaning: str
    default_on: bool = False
    empty_is_value: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("grace_period", parse_duration, "DURATION", "30s",
           "time the platform allows between SIGTERM and SIGKILL (match "
           "`terminationGracePeriodSeconds`)"),
    Option("kill_margin", parse_duration, "DURATION", "2s",
           "SIGKILL the job this long before the grace period ends, so runai-entry exits with "
           "the right code before the platform kills it"),
    Option("stop_signal", _stop_signal, "SIGNAL", "SIGTERM",
           "what the job receives on preemption (e.g. SIGUSR1 for frameworks that save on it)"),
    Option("preempt_exit_code", _preempt_exit_code, "N", "1",
           "exit code after a preemption (1 = requeue on Run:ai)"),
    Option("cleanup_timeout", parse_duration, "DURATION", "5s",
           "after a normal exit of the command, how long leftovers get between SIGTERM and "
           "SIGKILL"),
    Option("simulate_preempt", _optional_duration, "DURATION", "off",
           "behave exactly as if SIGTERM arrived DURATION after the command started"),
    Option("checkpoint_dir", _directory, "PATH", "none",
           "where the job's checkpoints live (the shared volume); a relative path is made "
           "absolute against runai-entry's working directory"),
    Option("resume_flag", _resume_flag, "TEXT", "`--resume-from`",
           "appended when a checkpoint is found: `--resume-from` = the flag then the "
           "path, `--resume={path}` = one argument with the path in it, `--init_from=resume` "
           "= one argument as written, no path; `''` = nothing (the variable is still set)",
           empty_is_value=True),
    Option("checkpoint_glob", _text, "GLOB", "none", "only names matching it are checkpoints"),
    Option("verify_checkpoints", _boolean, None, "on",
           "check the chosen file's integrity (zip central directory, HDF5/safetensors/pickle "
           "framing; headers and trailers only) and fall back to the previous one: a file "
           "written in place and cut by a SIGKILL would crash every attempt at load",
           default_on=True),
    Option("require_network_storage", _boolean, None, "off",
           "fail, instead of warning, when the checkpoint directory is on a local filesystem"),
    Option("simulate_requeue", _count, "N", "0",
           "with `--simulate-preempt`: the [preemption drill](#the-preemption-drill)"),
    Option("storage_timeout", _positive_duration, "DURATION", "30s",
           "how long the checkpoint directory may take to answer before the job starts; then "
           "exit 75 (a SIGTERM meanwhile still ends the wait at once)"),
    Option("hang_timeout", _hang_timeout, "DURATION|auto|off", "off",
           "stop a job whose training loop stopped beating "
           "(`runai_entry.training.heartbeat()`), after logging every process's stack "
           "([docs/watchdog.md](docs/watchdog.md))"),
    Option("save_timeout", parse_duration, "DURATION", "30m",
           "with the watchdog on: the allowance while the job announces a save"),
    Option("hang_exit_code", _optional_exit_code, "N", "the preempt code",
           "exit code after the watchdog stopped a hung job"),
    Option("max_attempts_without_progress", _count, "N", "3",
           "refuse to start (exit 86) when this member's last N attempts ended without a newer "
           "checkpoint; preemptions do not count; 0 = off"),
    Option("job_wide_preemption", _choice("auto", "on", "off"), "auto|on|off", "auto",
           "one member's preemption stops every member of the job and each exits with the "
           "preempt code; `auto` = on when the pod knows its member index (`POD_INDEX`, "
           "`RANK`, … `RUNAI_ENTRY_MEMBER`)"),
    Option("json", _boolean, None, "off",
           "with `--inspect`: print one JSON object instead of the report (its "
           "[schema](#--inspect---json))"),
    Option("timeline", _text, "FILE.svg", "none",
           "with `--inspect` or the drill: also write the attempts' timeline, a self-contained "
           "SVG picture (start-up, productive time, lost work, stop, queue waits, checkpoints)"),
    Option("metrics_port", _listen_address, "[HOST:]PORT", "off",
           "serve Prometheus metrics (goodput, badput by kind, the newest checkpoint's step and "
           "age, preemptions, the job's step rate) on `http://HOST:PORT/metrics` while the job "
           "runs; HOST: every address when left out. The three `--metrics-*` options need "
           "`--checkpoint-dir` and `pip install 'runai-entry[metrics]'` "
           "([docs/deployment.md](docs/deployment.md#prometheus-metrics))"),
    Option("metrics_file", _text, "PATH", "none",
           "write the same metrics to PATH at the end of each attempt, atomically, in the "
           "format of node-exporter's textfile collector (`*.prom`)"),
    Option("metrics_push", _push_url, "URL", "none",
           "push the same metrics to a Prometheus Pushgateway at the end of each attempt "
           "(within what is left of the grace period)"),
    Option("log_format", _choice("auto", "json", "console"), "auto|json|console", "auto",
           "auto = console on a terminal, JSON lines otherwise"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "LEVEL", "info",
           "debug, info, warning, error"),
    Option("termination_log", _termination_log, "PATH|auto|off", "auto",
           "at exit, write a short summary there for `kubectl describe pod` (the outcome and why "
           "the exit code, the attempt, the checkpoints resumed from and newest with their age, "
           "lost work, grace used, the first failure; under 4 KB); `auto` = "
           "`/dev/termination-log` when it exists and is writable; `off` or `''` disables it",
           empty_is_value=True),
    Option("refuse_fresh_start", _boolean, None, "off",
           "exit 75 instead of starting the job from scratch when its checkpoint failed "
           "verification (a save in place cut by a kill) and no verified copy of it was kept"),
)
BY_KEY = {option.key: option for option in OPTIONS}


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def env_name(key: str) -> str:
    return envvars.PREFIX + key.upper()


def readme_row(option: Option) -> str:
    """The option's row in README.md's options table."""
    flag = flag_name(option.key)
    if option.metavar is None:
        name = f"`{flag}` / `--no-{flag[2:]}`" if option.default_on else f"`{flag}`"
    else:
        name = f"`{flag} {option.metavar}`".replace("|", "\\|")
    return f"| {name} | {option.shown} | {option.meaning} |"
