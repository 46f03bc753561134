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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from runai_entry import envvars
from runai_entry.errors import ConfigError
from runai_entry.options import BY_KEY, env_name, flag_name

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

    @property
    def stop_timeout(self) -> float:
        """Seconds from the stop signal to runai-entry's own SIGKILL."""
        return self.grace_period - self.kill_margin

    @property
    def hang_code(self) -> int:
        """What a job stopped by the hang watchdog exits with."""
        return self.preempt_exit_code if self.hang_exit_code is None else self.hang_exit_code


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

    from_flag = flags.pop("config", None)
    config_path = from_flag or environ.get(CONFIG_ENV) or None
    if config_path:
        values.update(_from_file(config_path, "--config" if from_flag else CONFIG_ENV))
    for key, option in BY_KEY.items():
        raw = environ.get(env_name(key))
        if raw is None or (raw == "" and not option.empty_is_value):
            continue
        values[key] = _parse(option.parse, raw, env_name(key))
    inspect = bool(flags.pop("inspect", False))
    for key, raw in flags.items():
        if key not in BY_KEY:
            raise ConfigError(f"{flag_name(key)}: unknown option")
        if raw is None:
            continue
        values[key] = _parse(BY_KEY[key].parse, raw, flag_name(key))

    config = Config(command=tuple(command), inspect=inspect, **values)
    _check(config)
    return config


def _parse(parse: Callable[[Any], Any], raw: Any, where: str) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _from_file(path: str, origin: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None

    import yaml  # only when a file is given: it costs more than the rest of start-up

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of option names to values, got {type(data).__name__}"
        )
    values = {}
    for key, raw in data.items():
        if key not in BY_KEY:
            raise ConfigError(f"{path}: unknown key {key!r}{_did_you_mean(str(key))}")
        if raw is None:
            continue
        values[key] = _parse(BY_KEY[key].parse, raw, f"{path}: key {key!r}")
    return values


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), BY_KEY, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(BY_KEY)})"


def _check(config: Config) -> None:
    """Rules that involve more than one option."""
    if config.kill_margin >= config.grace_period:
        raise ConfigError(
            f"--kill-margin ({config.kill_margin:g}s) must be shorter than "
            f"--grace-period ({config.grace_period:g}s)"
        )
    if config.storage_timeout <= 0:
        raise ConfigError(f"--storage-timeout ({config.storage_timeout:g}s) must be positive")
    if config.simulate_requeue and config.simulate_preempt is None:
        raise ConfigError("--simulate-requeue needs --simulate-preempt")
    if config.simulate_requeue and config.checkpoint_dir is None:
        raise ConfigError("--simulate-requeue needs --checkpoint-dir (the drill resumes from it)")
    if config.json and not config.inspect:
        raise ConfigError("--json goes with --inspect (the report it prints as JSON)")
    if config.timeline is not None and not (config.inspect or config.simulate_requeue):
        raise ConfigError("--timeline goes with --inspect or the drill (--simulate-requeue)")
    if config.inspect:
        if config.checkpoint_dir is None:
            raise ConfigError("--inspect needs --checkpoint-dir")
        if config.command:
            raise ConfigError("--inspect runs no command; remove the command after it")
    elif not config.command:
        raise ConfigError(f"missing command; usage: {USAGE}")
