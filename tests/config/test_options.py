"""The one table of options: Config, click and the README all agree with
runai_entry.config.options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runai_entry.config.loading import Config
from runai_entry.config.options import OPTIONS, Option, readme_row

README = (Path(__file__).parents[2] / "README.md").read_text()
#: README rows that are not options of the table: modes and the file of options itself.
NOT_IN_THE_TABLE = ("| `--inspect` |", "| `--config PATH` |")


def options_table() -> list[str]:
    section = README[README.index("## Options"):README.index("### What the job is told")]
    return [line for line in section.splitlines() if line.startswith("| `--")]


def test_readme_has_one_row_per_option_as_the_table_renders_it() -> None:
    """A new option in the table needs its README row: this failure prints it, to paste."""
    rows = options_table()
    for option in OPTIONS:
        assert readme_row(option) in rows, f"README.md lacks:\n{readme_row(option)}"
    rendered = {readme_row(option) for option in OPTIONS}
    extra = [row for row in rows if row not in rendered and not row.startswith(NOT_IN_THE_TABLE)]
    assert extra == [], "README rows that no option in runai_entry/config/options.py renders"


def test_config_has_one_field_per_option() -> None:
    assert set(Config._fields) - {"command", "inspect"} == {option.key for option in OPTIONS}


def shown_default(option: Option) -> object:
    shown = option.shown.strip("`")
    if option.metavar is None:
        return {"on": True, "off": False}[shown]
    if shown in ("none", "off", "the preempt code"):
        return None
    return option.parse(shown)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.key)
def test_the_default_shown_is_the_default(option: Option) -> None:
    assert Config._field_defaults[option.key] == shown_default(option)


def test_help_has_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """click's options are made from the table: each shows in --help with its default."""
    from runai_entry import cli

    assert cli.parse(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        assert re.search(rf"--{option.key.replace('_', '-')}\b", text), option.key
        assert f"[{option.shown.strip('`')}]." in text, option.key


def test_help_points_to_no_section_below(capsys: pytest.CaptureFixture[str]) -> None:
    """--help has no sections: where the README's row links one, the help names README.md."""
    from runai_entry import cli

    assert cli.parse(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "below" not in text
    assert "the preemption drill in README.md" in text
