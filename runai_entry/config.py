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
from runai_entry.durations import parse_duration
from runai_entry.errors import ConfigError
from runai_entry.signals import parse_signal

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
    inspect: bool = False

    @property
    def stop_timeout(self) -> float:
        """Seconds from the stop signal to runai-entry's own SIGKILL."""
        return self.grace_period - self.kill_margin


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return text

    return parse


def _exit_code(value: Any) -> int:
    code = _integer(value)
    if not 0 <= code <= 255:
        raise ValueError(f"{value!r} is not an exit code (0-255)")
    return code


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


def _optional_duration(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("off", "none"):
        return None
    return parse_duration(value)


def _text(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a string")
    return str(value)


# Option name → parser. The keys are the YAML keys; flags and variables derive from them.
PARSERS: dict[str, Callable[[Any], Any]] = {
    "grace_period": parse_duration,
    "kill_margin": parse_duration,
    "stop_signal": parse_signal,
    "preempt_exit_code": _exit_code,
    "cleanup_timeout": parse_duration,
    "simulate_preempt": _optional_duration,
    "log_format": _choice("auto", "json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
    "checkpoint_dir": _text,
    "resume_flag": _text,
    "checkpoint_glob": _text,
    "verify_checkpoints": _boolean,
    "require_network_storage": _boolean,
    "simulate_requeue": _count,
}
# An empty value means "unset" except where the empty string itself means something.
_EMPTY_IS_A_VALUE = {"resume_flag"}


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def env_name(key: str) -> str:
    return envvars.PREFIX + key.upper()


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
    for key, parse in PARSERS.items():
        raw = environ.get(env_name(key))
        if raw is None or (raw == "" and key not in _EMPTY_IS_A_VALUE):
            continue
        values[key] = _parse(parse, raw, env_name(key))
    inspect = bool(flags.pop("inspect", False))
    for key, raw in flags.items():
        if key not in PARSERS:
            raise ConfigError(f"{flag_name(key)}: unknown option")
        if raw is None:
            continue
        values[key] = _parse(PARSERS[key], raw, flag_name(key))

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
        if key not in PARSERS:
            raise ConfigError(f"{path}: unknown key {key!r}{_did_you_mean(str(key))}")
        if raw is None:
            continue
        values[key] = _parse(PARSERS[key], raw, f"{path}: key {key!r}")
    return values


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), PARSERS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(PARSERS)})"


def _check(config: Config) -> None:
    """Rules that involve more than one option."""
    if config.kill_margin >= config.grace_period:
        raise ConfigError(
            f"--kill-margin ({config.kill_margin:g}s) must be shorter than "
            f"--grace-period ({config.grace_period:g}s)"
        )
    if config.simulate_requeue and config.simulate_preempt is None:
        raise ConfigError("--simulate-requeue needs --simulate-preempt")
    if config.simulate_requeue and config.checkpoint_dir is None:
        raise ConfigError("--simulate-requeue needs --checkpoint-dir (the drill resumes from it)")
    if config.inspect:
        if config.checkpoint_dir is None:
            raise ConfigError("--inspect needs --checkpoint-dir")
        if config.command:
            raise ConfigError("--inspect runs no command; remove the command after it")
    elif not config.command:
        raise ConfigError(f"missing command; usage: {USAGE}")
