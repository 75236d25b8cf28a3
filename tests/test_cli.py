"""The CLI contract: --version, --help with examples, one-line user errors, --debug tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from sonofm import __version__, cli
from sonofm.errors import UserError


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sonofm.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_version_flag() -> None:
    res = _run("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"sonofm {__version__}"


def test_help_lists_commands_and_examples() -> None:
    res = _run("--help")
    assert res.returncode == 0
    out = res.stdout
    assert "Examples" in out
    registered = {c.name or c.callback.__name__ for c in cli.app.registered_commands}
    registered |= {g.name for g in cli.app.registered_groups}
    assert registered, "no subcommands registered"
    for name in registered:
        assert name in out, f"`sonofm --help` does not list {name}"


@pytest.fixture()
def failing_command():
    @cli.app.command("_fail_for_test", hidden=True)
    def _fail() -> None:
        raise UserError("manifest.csv row 3: column 'split' must be train/val/test, got 'x'")

    yield
    cli.app.registered_commands[:] = [c for c in cli.app.registered_commands if c.name != "_fail_for_test"]


def test_user_error_is_one_line_exit_2(failing_command, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["sonofm", "_fail_for_test"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:")
    assert "column 'split'" in err
    assert "Traceback" not in err


def test_debug_shows_traceback(failing_command, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["sonofm", "--debug", "_fail_for_test"])
    with pytest.raises(UserError):
        cli.main()


def test_help_of_every_command_has_an_example() -> None:
    for cmd in cli.app.registered_commands:
        if cmd.hidden:
            continue
        doc = (cmd.help or (cmd.callback.__doc__ if cmd.callback else "") or "")
        assert "sonofm " in doc, f"`sonofm {cmd.name} --help` has no example"
    assert isinstance(cli.app, typer.Typer)


def test_epochs_done_counts_partial_epochs_of_a_run_cut_by_max_steps() -> None:
    from types import SimpleNamespace

    from sonofm.cli.train import _epochs_done

    assert _epochs_done(SimpleNamespace(step=3, epoch=0, data={"steps_per_epoch": 12})) == "0.25"
    assert _epochs_done(SimpleNamespace(step=24, epoch=2, data={"steps_per_epoch": 12})) == "2"
    assert _epochs_done(SimpleNamespace(step=5, epoch=1, data={})) == "1"  # a stream: no plan
