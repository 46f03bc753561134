"""The configuration: one typed, immutable object built once from four sources.

Precedence is flag > environment (``RUNAI_ENTRY_<KEY>``) > YAML file (``--config`` or
``RUNAI_ENTRY_CONFIG``) > default. Every bad value becomes a :class:`ConfigError` whose one line
names where it came from: the flag, the variable, or the file and key.

Start-up matters (this runs before the job is started), so this module avoids ``dataclasses``
(which pulls in ``inspect``) and imports ``yaml`` only when a file is given.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from runai_entry.config.options import BY_KEY, Address, env_name, flag_name
from runai_entry.core import envvars
from runai_entry.core.errors import ConfigError

#: The largest configuration file read: a few dozen keys fit in a kilobyte, and PyYAML takes
#: about a minute over 50 MB, during which a preemption's SIGTERM waits (blocked).
MAX_CONFIG_BYTES = 1 << 20
USAGE = "runai-entry [OPTIONS] [--] COMMAND [ARG...]"
CONFIG_ENV = envvars.PREFIX + "CONFIG"


class Config(NamedTuple):
    """Everything runai-entry was told, parsed and checked."""

    command: tuple[str, ...]
    grace_period: float = 30.0
    kill_margin: float = 2.0
    stop_signal: int = signal.SIGTERM
    preempt_exit_code: int = 1
    cleanup_timeout: float = 5.0
    simulate_preempt: float | None = None
    log_format: str = "auto"
    log_level: str = "info"
    checkpoint_dir: str | None = None
    resume_flag: str = "--resume-from"
    checkpoint_glob: str | None = None
    # On: a file written in place (Lightning, Keras ModelCheckpoint) and cut by a SIGKILL would
    # crash every attempt at load. It reads only headers and trailers (docs/benchmarks.md).
    verify_checkpoints: bool = True
    require_network_storage: bool = False
    simulate_requeue: int = 0
    storage_timeout: float = 30.0
    job_wide_preemption: str = "auto"
    hang_timeout: float | str | None = None  # None: off; "auto"; or seconds
    save_timeout: float = 1800.0
    hang_exit_code: int | None = None  # None: the preempt exit code
    max_attempts_without_progress: int = 3
    inspect: bool = False
    json: bool = False
    timeline: str | None = None
    metrics_port: Address | None = None
    metrics_file: str | None = None
    metrics_push: str | None = None
    termination_log: str | None = "auto"  # None: off; "auto": /dev/termination-log if writable
    refuse_fresh_start: bool = False

    @property
    def stop_timeout(self) -> float:
        """Seconds from the stop signal to runai-entry's own SIGKILL."""
        return self.grace_period - self.kill_margin

    @property
    def hang_code(self) -> int:
        """What a job stopped by the hang watchdog exits with."""
        return self.preempt_exit_code if self.hang_exit_code is None else self.hang_exit_code


#: Longer values are refused before any parser sees them: no path, glob or flag is longer
#: (PATH_MAX is 4096), and the error line, which quotes the value, stays readable.
MAX_CHARS = 4096
#: What YAML can hand us besides the scalars the parsers take, as the error line names them.
_YAML_KINDS: dict[type, str] = {
    list: "a list", dict: "a mapping", set: "a set", bytes: "binary data",
}


def load(
    command: Sequence[str],
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the Config from flags (already split by the CLI), environment and file.

    ``flags`` holds only the options given on the command line, raw (strings), plus ``config``
    and ``inspect`` when given.
    """
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    #: key -> where its value came from, for errors that involve more than one option.
    origin: dict[str, str] = {}

    from_flag = flags.pop("config", None)
    if from_flag == "":  # `--config "$FILE"` with FILE unset: not "no file", silently
        raise ConfigError("--config: an empty path")
    config_path = from_flag or environ.get(CONFIG_ENV) or None
    if config_path:
        for key, raw, where in _from_file(config_path, "--config" if from_flag else CONFIG_ENV):
            values[key], origin[key] = _parse(key, raw, where), where
    for key, option in BY_KEY.items():
        raw = environ.get(env_name(key))
        if raw is None or (raw == "" and not option.empty_is_value):
            continue
        values[key], origin[key] = _parse(key, raw, env_name(key)), env_name(key)
    inspect = bool(flags.pop("inspect", False))
    for key, raw in flags.items():
        if key not in BY_KEY:
            raise ConfigError(f"{flag_name(key)}: unknown option")
        if raw is None:
            continue
        values[key], origin[key] = _parse(key, raw, flag_name(key)), flag_name(key)

    config = Config(command=tuple(command), inspect=inspect, **values)
    _check(config, origin)
    return config


def _parse(key: str, raw: Any, where: str) -> Any:
    """The option's parser on one raw value; every way it can be wrong is one ConfigError."""
    option = BY_KEY[key]
    if isinstance(raw, str) and len(raw) > MAX_CHARS:
        raise ConfigError(f"{where}: {raw[:40]!r}... is {len(raw)} characters long; "
                          f"the most a value may have is {MAX_CHARS}")
    if not isinstance(raw, (str, int, float)):  # a date, or a YAML collection
        kind = _YAML_KINDS.get(type(raw), f"a {type(raw).__name__}")
        raise ConfigError(f"{where}: expected one value ({option.metavar or 'true or false'}), "
                          f"got {kind}")
    if isinstance(raw, int) and raw.bit_length() > 63:  # str() refuses past 4300 digits
        raise ConfigError(f"{where}: a number of {raw.bit_length()} bits is out of range")
    try:
        return option.parse(raw)
    except ValueError as exc:
        hint = (" (YAML reads an unquoted yes/no, on/off or true/false as a boolean: quote it)"
                if isinstance(raw, bool) else "")
        raise ConfigError(f"{where}: {exc}{hint}") from None


def _from_file(path: str, origin: str) -> list[tuple[str, Any, str]]:
    """The file's options as (key, raw value, where it came from); null values are left out."""
    try:
        raw = _read_regular(path)
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path!r}: not UTF-8 text") from None

    import yaml  # only when a file is given: it costs more than the rest of start-up

    class Loader(yaml.SafeLoader):
        """SafeLoader whose every failure is a YAMLError with the value's line and column."""

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            # PyYAML lets Python's own conversions raise: int() past 4300 digits and impossible
            # dates (ValueError), a malformed !!timestamp (AttributeError). The innermost node
            # raises first, so the mark is the value's.
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, AttributeError) as exc:
                raise yaml.MarkedYAMLError(problem=str(exc).split(";")[0],
                                           problem_mark=node.start_mark) from None

    try:
        data = yaml.load(text, Loader=Loader)  # a SafeLoader: no Python object tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path!r}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"config file {path!r}: invalid YAML: nested too deeply") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r}: expected a mapping of option names to values, "
                          f"got {_YAML_KINDS.get(type(data), f'a {type(data).__name__}')}")
    found = []
    for key, raw in data.items():
        if key not in BY_KEY:
            raise ConfigError(f"config file {path!r}: unknown key {key!r}"
                              f"{_did_you_mean(str(key))}")
        if raw is not None:
            found.append((key, raw, f"config file {path!r}, key {key!r}"))
    return found


def _read_regular(path: str) -> bytes:
    """The whole of a regular file of at most :data:`MAX_CONFIG_BYTES`; OSError otherwise.

    Opened with O_NONBLOCK: a FIFO would otherwise block the open until a writer came, and
    /dev/zero would never end. O_NONBLOCK changes nothing for a regular file.
    """
    import errno
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise OSError(errno.EFBIG, f"{info.st_size} bytes; a configuration file may hold "
                          f"{MAX_CONFIG_BYTES >> 20} MiB at most")
        chunks, size = [], 0
        while chunk := os.read(fd, MAX_CONFIG_BYTES + 1 - size):  # grown since the fstat?
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise OSError(errno.EFBIG, f"over {MAX_CONFIG_BYTES >> 20} MiB; a "
                              "configuration file may hold no more")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), BY_KEY, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(BY_KEY)})"


def _check(config: Config, origin: Mapping[str, str]) -> None:
    """Rules that involve more than one option; each names where the values came from."""

    def given(key: str, shown: str = "") -> str:
        where = origin.get(key)
        if where is None:
            return f"{flag_name(key)} ({shown}, the default)" if shown else flag_name(key)
        return f"{where} ({shown})" if shown else where

    if config.kill_margin >= config.grace_period:
        raise ConfigError(
            f"{given('kill_margin', f'{config.kill_margin:g}s')} must be shorter than "
            f"{given('grace_period', f'{config.grace_period:g}s')}"
        )
    if config.simulate_requeue and config.simulate_preempt is None:
        raise ConfigError(f"{given('simulate_requeue')} needs --simulate-preempt")
    if config.simulate_requeue and config.checkpoint_dir is None:
        raise ConfigError(
            f"{given('simulate_requeue')} needs --checkpoint-dir (the drill resumes from it)"
        )
    if config.json and not config.inspect:
        raise ConfigError(f"{given('json')} goes with --inspect (the report it prints as JSON)")
    if config.timeline is not None and not (config.inspect or config.simulate_requeue):
        raise ConfigError(
            f"{given('timeline')} goes with --inspect or the drill (--simulate-requeue)")
    for key in ("metrics_port", "metrics_file", "metrics_push"):
        if getattr(config, key) is not None and config.checkpoint_dir is None:
            raise ConfigError(f"{given(key)} needs --checkpoint-dir (the figures come from the "
                              "attempt history kept there)")
    if config.inspect:
        if config.checkpoint_dir is None:
            raise ConfigError("--inspect needs --checkpoint-dir")
        if config.command:
            raise ConfigError("--inspect runs no command; remove the command after it")
    elif not config.command:
        raise ConfigError(f"missing command; usage: {USAGE}")


#: Where Kubernetes reads a container's termination message (the default
#: ``terminationMessagePath``), present in every container.
KUBERNETES_TERMINATION_LOG = "/dev/termination-log"


def termination_target(config: Config) -> str | None:
    """Where ``--termination-log`` writes, or None: off, or ``auto`` outside Kubernetes.

    Here, not in termination.py: asked at every exit, and importing that module (compiled from
    source in an editable install) would add milliseconds to the exit of every job that has no
    message to write (bench/exit_latency.py)."""
    path = config.termination_log
    if path == "auto":
        return (KUBERNETES_TERMINATION_LOG if os.access(KUBERNETES_TERMINATION_LOG, os.W_OK)
                else None)
    return path
