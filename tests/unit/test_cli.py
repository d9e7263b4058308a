"""skycap.cli's argument parsing: KEY=VALUE words (Capistrano style), rev=, and the counts of `scale`
and the release= of `rollback`, which are parsed inside their commands: these run main() in this
process on bad input only, which is refused (exit 2) before anything is read or changed."""

from __future__ import annotations

import pytest

from skycap.cli import main
from skycap.cli_commands import parse_words, required_rev
from skycap.errors import BadInput


@pytest.mark.parametrize("words, values", [
    ((), {}),
    (("rev=abc",), {"rev": "abc"}),
    (("rev=",), {"rev": ""}),
    (("a=1", "b=x=y"), {"a": "1", "b": "x=y"}),  # only the first = splits
    (("msg=two words",), {"msg": "two words"}),
])
def test_key_value_words(words, values):
    assert parse_words(words) == values


@pytest.mark.parametrize("words, message, hint", [
    (("abc",), "unexpected argument 'abc'", "arguments after the stage are KEY=VALUE, like rev=abc123"),
    (("=abc",), "unexpected argument '=abc'", "KEY=VALUE"),
    (("a=1", "a=2"), "a= is given twice", None),
])
def test_bad_words_are_bad_usage(words, message, hint):
    with pytest.raises(BadInput) as info:
        parse_words(words)
    assert info.value.message == message
    assert info.value.hint == hint or hint in info.value.hint


def test_only_the_settings_a_command_takes():
    assert parse_words(("rev=1",), {"rev"}) == {"rev": "1"}
    with pytest.raises(BadInput) as info:
        parse_words(("rev=1", "tag=2"), {"rev", "release"})
    assert info.value.message == "unknown setting tag="
    assert info.value.hint == "this command takes: release, rev"


def test_rev_is_required_and_the_hint_shows_the_whole_command():
    assert required_rev(("rev=tip",), "deploy", "staging") == "tip"
    for words in ((), ("rev=",)):
        with pytest.raises(BadInput) as info:
            required_rev(words, "deploy", "staging")
        assert info.value.message == "missing rev="
        assert info.value.hint.endswith("skycap deploy staging rev=REV")


@pytest.mark.parametrize("args, message", [
    (["scale", "demo", "web=lots"], "web=lots: the count must be a whole number, like web=3"),
    (["scale", "demo", "web=-1"], "web=-1: the count must be a whole number"),
    (["scale", "demo", "web="], "web=: the count must be a whole number"),
    (["scale", "demo", "web=1.5"], "web=1.5: the count must be a whole number"),
    (["scale", "demo", "web"], "unexpected argument 'web'"),
    (["rollback", "demo", "release=latest"], "release=latest is not a release number"),
    (["rollback", "demo", "release=-2"], "release=-2 is not a release number"),
    (["rollback", "demo", "rev=1"], "unknown setting rev="),
    (["task", "demo", "migrate", "dry"], "unexpected argument 'dry'"),
])
def test_counts_and_release_numbers_are_whole_numbers(args, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--project", "/nonexistent", *args])
    assert exited.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err


def plain(**given):
    return {"project": None, "tail": None, "since": None, "follow": False, "previous": False, **given}


@pytest.mark.parametrize("args, expected", [
    (["logs", "prod", "web"], plain(stage="prod", service="web")),
    (["--project", "/p", "logs", "prod", "web"], plain(project="/p", stage="prod", service="web")),
    (["--project=/p", "logs", "prod", "web"], plain(project="/p", stage="prod", service="web")),
    (["logs", "prod", "web", "-f"], plain(stage="prod", service="web", follow=True)),
    (["logs", "--follow", "prod", "web"], plain(stage="prod", service="web", follow=True)),
    (["logs", "prod", "web", "--previous"], plain(stage="prod", service="web", previous=True)),
    (["logs", "prod", "-p", "web"], plain(stage="prod", service="web", previous=True)),
    (["logs", "prod", "web", "--tail", "20"], plain(stage="prod", service="web", tail=20)),
    (["logs", "prod", "web", "--tail=0"], plain(stage="prod", service="web", tail=0)),
    (["logs", "prod", "web", "--tail", "1", "--tail", "5"], plain(stage="prod", service="web", tail=5)),
    (["logs", "prod", "web", "--since", "10m"], plain(stage="prod", service="web", since="10m")),
    (["logs", "prod", "web", "--since=1h30m", "-f"], plain(stage="prod", service="web", since="1h30m", follow=True)),
    (["logs", "prod", "web", "--since", "soon"], plain(stage="prod", service="web", since="soon")),  # logs says why
])
def test_plain_logs_commands_skip_click(args, expected):
    from skycap.cli import plain_logs

    assert plain_logs(args) == expected


@pytest.mark.parametrize("args", [
    [], ["--help"], ["--version"], ["status", "prod"], ["-v", "logs", "prod", "web"],
    ["--project", "/p", "-v", "logs", "prod", "web"], ["--project"], ["--project", "/p"],
    ["logs"], ["logs", "prod"], ["logs", "prod", "web", "extra"],
    ["logs", "prod", "web", "--help"], ["logs", "-h", "prod", "web"],
    ["logs", "prod", "web", "--unknown"], ["logs", "prod", "web", "-x"], ["logs", "prod", "web", "-fp"],
    ["logs", "prod", "web", "--tail"], ["logs", "prod", "web", "--tail", "-1"], ["logs", "prod", "web", "--tail=x"],
    ["logs", "prod", "web", "--tail", "1.5"], ["logs", "prod", "web", "--tail", "٣"],
    ["logs", "prod", "web", "--since"],
    ["logs", "prod", "web", "--since="], ["logs", "prod", "web", "--", "-f"], ["logs", "prod", "-", "web"],
    ["--project=", "logs", "prod", "web"], ["--project", "--tail", "logs", "prod", "web"],
    ["exec", "prod", "web", "--", "logs", "a", "b"],
])
def test_other_forms_go_to_click(args):
    from skycap.cli import plain_logs

    assert plain_logs(args) is None


def test_a_plain_logs_command_does_not_import_click(tmp_path):
    import subprocess
    import sys

    (tmp_path / "stages").mkdir()
    code = ("import sys; from skycap.cli import main\n"
            f"try:\n    main(['--project', {str(tmp_path)!r}, 'logs', 'nostage', 'web', '--tail', '5'])\n"
            "except SystemExit as exc:\n    print(exc.code, 'click' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "unknown stage 'nostage'" in done.stderr


def test_a_plain_logs_command_does_not_import_dataclasses():
    """Nor inspect, which it imports: ~14 ms of the command's start (the example project's stage)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys; from skycap.cli import main\n"
            f"try:\n    main(['--project', {str(root)!r}, 'logs', 'demo', 'nosuchservice'])\n"
            "except SystemExit as exc:\n    print(exc.code, 'dataclasses' in sys.modules, 'inspect' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert "stage demo has no service 'nosuchservice'" in done.stderr


def test_logs_usage_errors_are_clicks(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--project", "/nonexistent", "logs", "prod", "web", "--tail", "x"])
    assert exited.value.code == 2
    assert "'x' is not a valid integer" in capsys.readouterr().err
