"""Every option, every kind of value, from every source: the documented value, or exit 2 with one
line naming the key and the source. Never a traceback, never exit 1 (the requeue code).

Generated from the option table (runai_entry.config.options.OPTIONS): a new option is covered here
without a test written for it. The matrix runs in-process through ``cli.parse``, the command's
own path up to its exit: ``cli.main`` prints a RunaiEntryError's line and exits with its code,
and anything else escapes as a traceback with exit 1, which is what these tests rule out. A few
runs of the real command (TestTheRealCommand) prove that last step.
"""

from __future__ import annotations

import os
import subprocess
import typing
from pathlib import Path

import pytest
import yaml

from runai_entry import cli
from runai_entry.config.loading import Config
from runai_entry.config.options import OPTIONS, Option, env_name, flag_name
from runai_entry.core.errors import ConfigError
from tests.harness.spawning import ENTRY, child_env

HUGE = "x" * 1_000_000
#: What a user may type after ``key: `` in the file, unquoted: every YAML type and then some.
FILE_VALUES = {
    "list": "[1]", "mapping": "{a: 1}", "true": "true", "false": "false", "on": "on",
    "off": "off", "yes": "yes", "null": "null", "empty": "", "integer": "7", "zero": "0",
    "negative": "-1", "float": "2.5", "huge-integer": "1" + "0" * 30, "digits": "9" * 5000,
    "inf": ".inf", "nan": ".nan", "string": "hello", "quoted-number": "'7'",
    "date": "2024-01-01", "impossible-date": "2024-13-45", "bad-timestamp": "!!timestamp x",
    "set": "!!set {a}", "binary": "!!binary aGk=", "nul": '"a\\x00b"', "newline": '"a\\nb"',
    "huge-string": HUGE,
}
#: The environment and the command line hand over strings only.
TEXT_VALUES = {
    "empty": "", "spaces": "  ", "list": "[1]", "mapping": "{a: 1}", "true": "true",
    "null": "null", "integer": "7", "negative": "-1", "float": "2.5", "string": "hello",
    "auto": "auto", "off": "off", "newline": "a\nb", "huge-string": HUGE,
}
#: Documented spellings by metavar, for the test that every source reads them alike. Words in a
#: metavar such as ``auto|on|off`` are their own examples.
EXAMPLES = {
    "DURATION": ["45", "45s", "500ms", "1m30s", "1h", "0.25", "0"],
    "SIGNAL": ["SIGUSR1", "USR1", "10", "term"],
    "N": ["0", "3", "255"],
    "PATH": ["ckpt", "/data/ckpt"],
    "TEXT": ["--resume", "--load"],
    "GLOB": ["*.pt", "step-*"],
    "LEVEL": ["debug", "warning"],
    "FILE.svg": ["timeline.svg", "/data/ckpt/attempts.svg"],
    "[HOST:]PORT": ["9102", "127.0.0.1:9102", "[::1]:9102"],
    "URL": ["http://pushgateway:9091", "pushgateway.monitoring:9091"],
}
SWITCH_WORDS = ["true", "false", "yes", "no", "on", "off", "1", "0"]
TYPES = typing.get_type_hints(Config)


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets reaches the configuration."""
    for name in os.environ:
        if name.startswith("RUNAI_ENTRY_"):
            monkeypatch.delenv(name)


def outcome(argv: list[str]) -> Config | ConfigError:
    """What ``runai-entry ARGV`` makes of its configuration: the Config it would run, or the
    error it would print and exit with. Any other exception propagates: a test failure."""
    try:
        parsed = cli.parse(argv)
    except ConfigError as exc:
        return exc
    assert isinstance(parsed, Config), parsed
    return parsed


def from_file(tmp_path: Path, key: str, text: str) -> tuple[Config | ConfigError, str]:
    path = tmp_path / "c.yaml"
    path.write_text(f"{key}: {text}\n", encoding="utf-8")
    return outcome(["--config", str(path), "--", "true"]), f"config file {str(path)!r}"


def from_env(monkeypatch: pytest.MonkeyPatch, key: str, text: str
             ) -> tuple[Config | ConfigError, str]:
    monkeypatch.setenv(env_name(key), text)
    return outcome(["--", "true"]), env_name(key)


def from_flag(option: Option, text: str) -> tuple[Config | ConfigError, str]:
    flag = flag_name(option.key)
    # A switch takes no value: given one, it is click's usage error.
    argv = [f"{flag}={text}"] if option.metavar is None else [flag, text]
    return outcome([*argv, "--", "true"]), flag


def assert_documented(option: Option, result: Config | ConfigError, source: str) -> None:
    """A Config whose field has the documented type, or one line naming the key and source."""
    if isinstance(result, Config):
        value = getattr(result, option.key)
        assert isinstance(value, TYPES[option.key]), (option.key, source, value)
        return
    assert type(result) is ConfigError and result.exit_code == 2
    line = str(result)
    assert "\n" not in line and len(line) < 600, line[:600]
    assert source in line, line
    if source.startswith("config file"):
        assert f"key {option.key!r}" in line or "invalid YAML at line" in line, line


def ids(option: Option) -> str:
    return option.key


@pytest.mark.parametrize("name", FILE_VALUES)
@pytest.mark.parametrize("option", OPTIONS, ids=ids)
def test_every_yaml_value_in_the_file(option: Option, name: str, tmp_path: Path) -> None:
    assert_documented(option, *from_file(tmp_path, option.key, FILE_VALUES[name]))


@pytest.mark.parametrize("name", TEXT_VALUES)
@pytest.mark.parametrize("option", OPTIONS, ids=ids)
def test_every_string_in_the_environment(option: Option, name: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert_documented(option, *from_env(monkeypatch, option.key, TEXT_VALUES[name]))


@pytest.mark.parametrize("name", TEXT_VALUES)
@pytest.mark.parametrize("option", OPTIONS, ids=ids)
def test_every_string_as_the_flag(option: Option, name: str) -> None:
    assert_documented(option, *from_flag(option, TEXT_VALUES[name]))


#: Switches that mean something only beside another mode: the rest of the command line they go
#: with (the default is a command to run).
CONTEXT = {"json": ["--inspect", "--checkpoint-dir", "ck"]}


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.metavar is None], ids=ids)
def test_a_switch_as_a_flag_is_on_and_its_no_form_off(option: Option) -> None:
    flag = flag_name(option.key)
    context = CONTEXT.get(option.key, ["--", "true"])
    on = outcome([flag, *context])
    assert isinstance(on, Config) and getattr(on, option.key) is True
    off = outcome([f"--no-{flag[2:]}", *context])
    if option.default_on:
        assert isinstance(off, Config) and getattr(off, option.key) is False
    else:  # no off form: the default is off
        assert isinstance(off, ConfigError) and f"--no-{flag[2:]}" in str(off)


def examples(option: Option) -> list[str]:
    """The option's documented spellings: by its metavar, and its default as the README shows
    it (``off`` for --simulate-preempt, whose metavar says DURATION only)."""
    if option.metavar is None:
        return SWITCH_WORDS
    words = [option.shown.strip("`")]
    for part in option.metavar.split("|"):
        if part.islower():
            words.append(part)
        else:
            assert part in EXAMPLES, f"add examples of {part} to EXAMPLES"
            words += EXAMPLES[part]
    return words


def unquoted_is_text(text: str) -> bool:
    """YAML reads ``key: TEXT`` as a scalar (a string, number or boolean) rather than null, a
    collection or an error: only then can the file be held to mean what the variable means."""
    try:
        value = yaml.safe_load(f"k: {text}")["k"]
    except yaml.YAMLError:
        return False  # `*.pt` is an alias to YAML: the user must quote it
    return isinstance(value, (str, int, float))


def same(a: Config | ConfigError, b: Config | ConfigError) -> bool:
    if isinstance(a, ConfigError) or isinstance(b, ConfigError):
        return isinstance(a, ConfigError) and isinstance(b, ConfigError)
    return a == b


@pytest.mark.parametrize("option", OPTIONS, ids=ids)
def test_a_documented_spelling_means_the_same_from_every_source(
        option: Option, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hang_timeout: off`` in the file is YAML's false, ``RUNAI_ENTRY_HANG_TIMEOUT=off`` is the
    word: both must turn the watchdog off, as ``--hang-timeout off`` does."""
    for text in examples(option):
        monkeypatch.delenv(env_name(option.key), raising=False)
        env, _ = from_env(monkeypatch, option.key, text)
        monkeypatch.delenv(env_name(option.key))
        sources = {"quoted in the file": from_file(tmp_path, option.key, repr(text))[0]}
        if unquoted_is_text(text):
            sources["unquoted in the file"] = from_file(tmp_path, option.key, text)[0]
        if option.metavar is not None:
            sources["the flag"] = from_flag(option, text)[0]
        for where, result in sources.items():
            assert same(result, env), (option.key, text, where, result, env)


class TestTheRealCommand:
    """The exit code and stderr of the command itself, for the cases the issue found."""

    @pytest.mark.parametrize(("yaml_text", "key"), [
        ("grace_period: [1]", "grace_period"),
        ("grace_period: {a: 1}", "grace_period"),
        ("hang_timeout: [1]", "hang_timeout"),
        ("stop_signal: 2024-13-45", "line 1"),
    ])
    def test_a_bad_file_value_is_one_line_and_exit_2(self, tmp_path: Path, yaml_text: str,
                                                    key: str) -> None:
        path = tmp_path / "c.yaml"
        path.write_text(yaml_text + "\n")
        r = subprocess.run([*ENTRY, "--config", str(path), "--", "true"], capture_output=True,
                           text=True, timeout=60, env=child_env())
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"config file {str(path)!r}" in r.stderr and key in r.stderr, r.stderr

    @pytest.mark.parametrize("how", ["environment", "flag"])
    def test_a_huge_string_is_one_short_line_and_exit_2(self, how: str) -> None:
        """Under the kernel's limit for one argument or variable (128 KiB), far over ours."""
        value = "9" * 120_000
        env = child_env(RUNAI_ENTRY_GRACE_PERIOD=value) if how == "environment" else child_env()
        args = ["--grace-period", value] if how == "flag" else []
        r = subprocess.run([*ENTRY, *args, "--", "true"], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 2 and len(r.stderr) < 300, r.stderr[:300]
        assert "GRACE_PERIOD" in r.stderr or "--grace-period" in r.stderr

    def test_yaml_booleans_for_on_and_off_run(self, tmp_path: Path) -> None:
        """``off`` and ``on`` written plainly in the file are what they say, not an error."""
        path = tmp_path / "c.yaml"
        path.write_text("hang_timeout: off\nsimulate_preempt: off\njob_wide_preemption: off\n")
        r = subprocess.run([*ENTRY, "--config", str(path), "--", "true"], capture_output=True,
                           text=True, timeout=60, env=child_env(), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
