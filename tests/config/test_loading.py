"""Durations, signal names, and the configuration's sources and precedence."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runai_entry import cli
from runai_entry.config.durations import format_seconds, parse_duration
from runai_entry.config.loading import MAX_CONFIG_BYTES, Config, load
from runai_entry.core.errors import ConfigError
from runai_entry.core.signals import forwarded_signals, parse_signal, signal_name
from tests.harness.spawning import ENTRY, child_env


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("30", 30), ("30s", 30), ("500ms", 0.5), ("2m", 120), ("1m30s", 90), ("1h", 3600),
         ("1h30m", 5400), ("2s500ms", 2.5), ("0.25", 0.25), ("1.5s", 1.5), (" 10s ", 10),
         (7, 7), (2.5, 2.5), ("0", 0)],
    )
    def test_accepted(self, text: str, seconds: float) -> None:
        """Every documented form parses to seconds."""
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["", "s", "3x", "-1", "1s1h", "1m1m", "10 s", "1e400",
                                      "nan", True, -3, [1], {"a": 1}, None, float("inf"),
                                      float("nan"), 10**400, "9000h", 366 * 86400])
    def test_rejected(self, text: str) -> None:
        """Malformed, negative or out-of-order durations are errors, not zero."""
        with pytest.raises(ValueError):
            parse_duration(text)

    def test_format(self) -> None:
        """Seconds are written the shortest exact way for the job's environment."""
        assert [format_seconds(x) for x in (28, 27.5, 0.25, 0)] == ["28", "27.5", "0.25", "0"]


class TestSignals:
    @pytest.mark.parametrize("text", ["SIGUSR1", "USR1", "usr1", "sigusr1", "10", 10])
    def test_names(self, text: str) -> None:
        """Names with or without SIG, any case, and numbers all name the signal."""
        assert parse_signal(text) == signal.SIGUSR1

    @pytest.mark.parametrize("text", ["FOO", "999", "", "SIG"])
    def test_bad_names(self, text: str) -> None:
        """Unknown names and numbers are rejected."""
        with pytest.raises(ValueError):
            parse_signal(text)

    def test_forwarded_set(self) -> None:
        """Job-control and fault signals are not forwarded; the usual ones and RT ones are."""
        fwd = forwarded_signals()
        for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                  signal.SIGTERM, signal.SIGWINCH, signal.SIGCONT, signal.SIGALRM,
                  signal.SIGRTMIN):
            assert s in fwd
        for s in (signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV,
                  signal.SIGTTIN, signal.SIGPIPE):
            assert s not in fwd

    def test_names_of_realtime_signals(self) -> None:
        """Unnamed real-time signals get a readable name in logs."""
        assert signal_name(signal.SIGRTMIN + 2) == "SIGRTMIN+2"
        assert signal_name(15) == "SIGTERM"


class TestPrecedence:
    def test_defaults(self) -> None:
        """With nothing set, the documented defaults apply."""
        c = load(["python"], {}, {})
        assert (c.grace_period, c.kill_margin, c.stop_signal, c.preempt_exit_code,
                c.cleanup_timeout, c.simulate_preempt) == (30, 2, signal.SIGTERM, 1, 5, None)
        assert c.stop_timeout == 28

    def test_flag_beats_env_beats_file(self, tmp_path: Path) -> None:
        """flag > environment > config file > default, key by key."""
        f = tmp_path / "c.yaml"
        f.write_text("grace_period: 40\nkill_margin: 3s\ncleanup_timeout: 9\n")
        env = {"RUNAI_ENTRY_CONFIG": str(f), "RUNAI_ENTRY_GRACE_PERIOD": "50",
               "RUNAI_ENTRY_KILL_MARGIN": "4"}
        c = load(["x"], {"kill_margin": "5"}, env)
        assert (c.grace_period, c.kill_margin, c.cleanup_timeout) == (50, 5, 9)

    def test_config_flag_beats_config_env(self, tmp_path: Path) -> None:
        """--config wins over RUNAI_ENTRY_CONFIG."""
        a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
        a.write_text("grace_period: 11\n")
        b.write_text("grace_period: 22\n")
        c = load(["x"], {"config": str(a)}, {"RUNAI_ENTRY_CONFIG": str(b)})
        assert c.grace_period == 11

    def test_empty_env_is_unset_but_empty_resume_flag_is_a_value(self) -> None:
        """An empty variable does not override, except where empty means something."""
        c = load(["x"], {}, {"RUNAI_ENTRY_GRACE_PERIOD": "", "RUNAI_ENTRY_RESUME_FLAG": ""})
        assert c.grace_period == 30 and c.resume_flag == ""

    def test_env_booleans(self) -> None:
        """Booleans from the environment read true/false/1/0/yes/no."""
        c = load(["x"], {}, {"RUNAI_ENTRY_REQUIRE_NETWORK_STORAGE": "yes"})
        assert c.require_network_storage is True

    def test_checkpoints_are_verified_unless_turned_off(self, tmp_path: Path) -> None:
        """Verification is on by default; the flag, the variable and the YAML key turn it off."""
        assert load(["x"], {}, {}).verify_checkpoints is True
        assert load(["x"], {}, {"RUNAI_ENTRY_VERIFY_CHECKPOINTS": "false"}).verify_checkpoints \
            is False
        f = tmp_path / "c.yaml"
        f.write_text("verify_checkpoints: false\n")
        assert load(["x"], {"config": str(f)}, {}).verify_checkpoints is False
        off = cli.parse(["--no-verify-checkpoints", "--", "x"])
        on = cli.parse(["--verify-checkpoints", "--", "x"])
        assert isinstance(off, Config) and isinstance(on, Config)
        assert off.verify_checkpoints is False and on.verify_checkpoints is True


class TestErrors:
    @pytest.mark.parametrize(
        ("flags", "env", "message"),
        [
            ({"grace_period": "3x"}, {}, "--grace-period: '3x' is not a duration"),
            ({}, {"RUNAI_ENTRY_STOP_SIGNAL": "FOO"}, "RUNAI_ENTRY_STOP_SIGNAL: 'FOO'"),
            ({"preempt_exit_code": "300"}, {}, "--preempt-exit-code: '300' is not an exit code"),
            ({"log_format": "xml"}, {}, "--log-format: 'xml' is not one of"),
            ({"grace_period": "5", "kill_margin": "5"}, {}, "--kill-margin (5s) must be shorter"),
            ({"simulate_requeue": "2"}, {}, "--simulate-requeue needs --simulate-preempt"),
        ],
    )
    def test_bad_values_name_their_source(self, flags: dict[str, str], env: dict[str, str],
                                          message: str) -> None:
        """Each error names the flag or variable and the bad value."""
        with pytest.raises(ConfigError, match=re.escape(message)):
            load(["x"], flags, env)

    def test_a_rule_of_two_options_names_where_each_came_from(self, tmp_path: Path) -> None:
        """The file's key and the default it collides with are both named."""
        f = tmp_path / "c.yaml"
        f.write_text("grace_period: 1\n")
        with pytest.raises(ConfigError) as caught:
            load(["x"], {"config": str(f)}, {})
        assert str(caught.value) == (f"--kill-margin (2s, the default) must be shorter than "
                                     f"config file {str(f)!r}, key 'grace_period' (1s)")

    @pytest.mark.parametrize(("flags", "message"), [
        ({"checkpoint_dir": ""}, "--checkpoint-dir: an empty value"),
        ({"checkpoint_glob": ""}, "--checkpoint-glob: an empty value"),
        ({"storage_timeout": "0"}, "--storage-timeout: '0' must be more than 0"),
        ({"log_level": "x" * 5000}, "is 5000 characters long; the most a value may have"),
    ])
    def test_values_no_option_can_use(self, flags: dict[str, str], message: str) -> None:
        """An empty path (``--checkpoint-dir "$UNSET"``) is not "no checkpoints", silently."""
        with pytest.raises(ConfigError, match=re.escape(message)):
            load(["x"], flags, {})

    def test_an_empty_resume_flag_is_a_value_from_every_source(self) -> None:
        assert load(["x"], {"resume_flag": ""}, {}).resume_flag == ""

    def test_missing_command(self) -> None:
        """No command is a usage error."""
        with pytest.raises(ConfigError, match="missing command"):
            load([], {}, {})

    def test_unknown_yaml_key(self, tmp_path: Path) -> None:
        """An unknown key names the file, the key, and the likely intended key."""
        f = tmp_path / "c.yaml"
        f.write_text("grace_perod: 10\n")
        expected = (r"config file '.*c.yaml': unknown key 'grace_perod' "
                    r"\(did you mean 'grace_period'\?\)")
        with pytest.raises(ConfigError, match=expected):
            load(["x"], {"config": str(f)}, {})

    def test_bad_yaml_value(self, tmp_path: Path) -> None:
        """A bad value names the file and the key."""
        f = tmp_path / "c.yaml"
        f.write_text("stop_signal: NOPE\n")
        with pytest.raises(ConfigError, match=r"config file '.*c.yaml', key 'stop_signal': 'NOPE'"):
            load(["x"], {"config": str(f)}, {})

    def test_invalid_yaml(self, tmp_path: Path) -> None:
        """Broken YAML names the file and the line."""
        f = tmp_path / "c.yaml"
        f.write_text("grace_period: 10\n  - nope: [\n")
        with pytest.raises(ConfigError, match=r"c.yaml': invalid YAML at line \d+"):
            load(["x"], {"config": str(f)}, {})

    def test_yaml_not_a_mapping(self, tmp_path: Path) -> None:
        """A YAML list is not a configuration."""
        f = tmp_path / "c.yaml"
        f.write_text("- 1\n- 2\n")
        with pytest.raises(ConfigError, match="expected a mapping"):
            load(["x"], {"config": str(f)}, {})

    def test_yaml_is_safe_loaded(self, tmp_path: Path) -> None:
        """Python object tags are refused, not executed."""
        f = tmp_path / "c.yaml"
        f.write_text("grace_period: !!python/object/apply:os.system ['echo pwned']\n")
        with pytest.raises(ConfigError, match="invalid YAML"):
            load(["x"], {"config": str(f)}, {})

    def test_empty_config_flag(self) -> None:
        """An empty --config is an error; an empty RUNAI_ENTRY_CONFIG is unset, like any other."""
        with pytest.raises(ConfigError, match="--config: an empty path"):
            load(["x"], {"config": ""}, {})
        assert load(["x"], {}, {"RUNAI_ENTRY_CONFIG": ""}).grace_period == 30

    def test_missing_config_file(self, tmp_path: Path) -> None:
        """A config file that does not exist is named with the reason."""
        with pytest.raises(ConfigError, match=r"--config: cannot read .*No such file"):
            load(["x"], {"config": str(tmp_path / "nope.yaml")}, {})


class TestCommandLine:
    def test_fast_path_equals_click_path(self) -> None:
        """A command with no options parses the same with or without click."""
        fast = cli.parse(["python", "-u", "train.py", "--lr", "3"])
        dashed = cli.parse(["--", "python", "-u", "train.py", "--lr", "3"])
        with_click = cli.parse(["--grace-period", "30s", "python", "-u", "train.py", "--lr", "3"])
        assert isinstance(fast, Config) and isinstance(with_click, Config)
        assert fast == dashed == with_click
        assert fast.command == ("python", "-u", "train.py", "--lr", "3")

    def test_options_after_the_command_belong_to_it(self) -> None:
        """Options after the command are the command's, even ones runai-entry knows."""
        c = cli.parse(["--kill-margin", "1", "train", "--grace-period", "5"])
        assert isinstance(c, Config)
        assert c.command == ("train", "--grace-period", "5") and c.grace_period == 30

    def test_flags(self) -> None:
        """Boolean flags and valued options reach the Config."""
        c = cli.parse(["--verify-checkpoints", "--stop-signal", "USR1", "--", "x"])
        assert isinstance(c, Config)
        assert c.verify_checkpoints and c.stop_signal == signal.SIGUSR1

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--bogus", "x"], "No such option"),
            (["--grace-period"], "requires an argument"),
            ([], "missing command"),
            (["--grace-period", "1", "--kill-margin", "2", "x"], "must be shorter"),
        ],
    )
    def test_usage_errors_are_one_line_exit_2(self, args: list[str], message: str) -> None:
        """The real command prints one line naming the problem, exits 2, no traceback."""
        r = subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("runai-entry: error:") and message in lines[0]
        assert "Traceback" not in r.stderr

    def test_bad_yaml_through_the_command(self, tmp_path: Path) -> None:
        """A bad config file fails the real command with its name and line, exit 2."""
        f = tmp_path / "bad.yaml"
        f.write_text("grace_period: [\n")
        r = subprocess.run([*ENTRY, "--config", str(f), "true"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and "bad.yaml': invalid YAML at line" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1

    def test_help_and_version(self) -> None:
        """--help and --version exit 0 and run nothing."""
        r = subprocess.run([*ENTRY, "--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "--grace-period" in r.stdout
        r = subprocess.run([*ENTRY, "--version"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "runai-entry" in r.stdout

    def test_python_dash_m_and_console_script(self) -> None:
        """Both entry points run the command and pass its exit code through."""
        script = Path(sys.executable).with_name("runai-entry")
        for argv in ([*ENTRY], [str(script)]):
            r = subprocess.run([*argv, "sh", "-c", "exit 7"], capture_output=True, timeout=30)
            assert r.returncode == 7


def _entry(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _one_line(r: subprocess.CompletedProcess[str], *parts: str) -> None:
    """Exit 2 and one line on stderr that holds every one of ``parts``."""
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runai-entry: error:"), r.stderr
    for part in parts:
        assert part in lines[0], lines[0]


class TestValuesThatWouldDefeatThePreemption:
    @pytest.mark.parametrize("name", ["SIGKILL", "KILL", "9", "SIGSTOP", "TSTP", "SIGTTIN",
                                      "ttou", "SIGCHLD"])
    def test_a_stop_signal_the_job_cannot_save_on(self, name: str) -> None:
        """KILL and STOP cannot be caught (SIGKILL would then be recorded as a clean
        preemption); TSTP, TTIN and TTOU stop the job instead of asking it to save; CHLD is
        ignored by default: none is a stop signal."""
        r = _entry("--stop-signal", name, "true")
        _one_line(r, "--stop-signal", "cannot be")
        env_form = subprocess.run([*ENTRY, "true"], capture_output=True, text=True, timeout=30,
                                  env={**child_env(), "RUNAI_ENTRY_STOP_SIGNAL": name})
        _one_line(env_form, "RUNAI_ENTRY_STOP_SIGNAL")

    def test_a_preempt_exit_code_of_0_would_never_requeue(self) -> None:
        r = _entry("--preempt-exit-code", "0", "true")
        _one_line(r, "--preempt-exit-code", "never be requeued")

    def test_usual_values_still_work(self) -> None:
        r = _entry("--stop-signal", "USR1", "--preempt-exit-code", "143", "true")
        assert r.returncode == 0, r.stderr


class TestConfigFileIsARegularFile:
    def test_a_fifo_is_refused_at_once(self, tmp_path: Path) -> None:
        """Opened for reading, a FIFO blocks until a writer comes: with SIGTERM blocked, a
        preemption could not even stop that wait."""
        fifo = tmp_path / "c.yaml"
        os.mkfifo(fifo)
        _one_line(_entry("--config", str(fifo), "true", timeout=20), str(fifo),
                  "not a regular file")

    def test_a_device_is_refused(self) -> None:
        _one_line(_entry("--config", "/dev/zero", "true", timeout=20), "/dev/zero",
                  "not a regular file")

    def test_a_directory_is_refused(self, tmp_path: Path) -> None:
        _one_line(_entry("--config", str(tmp_path), "true", timeout=20), "not a regular file")

    def test_a_file_over_the_limit_is_refused_without_parsing_it(self, tmp_path: Path) -> None:
        big = tmp_path / "c.yaml"
        big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
        _one_line(_entry("--config", str(big), "true"), str(big), "MiB")

    def test_a_file_under_the_limit_is_read(self, tmp_path: Path) -> None:
        f = tmp_path / "c.yaml"
        f.write_text("# padding\n" * 1000 + "grace_period: 45s\n")
        assert load(["x"], {"config": str(f)}, {}).grace_period == 45
