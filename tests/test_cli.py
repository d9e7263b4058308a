"""The command line alone (no cluster): usage errors exit 2 with a message that says what to do."""

from pathlib import Path

import pytest

from tests.deployproject import skycap

ROOT = Path(__file__).resolve().parent.parent


def test_version_and_help():
    assert skycap("--version").stdout.startswith("skycap, version ")
    ran = skycap("--help")
    assert ran.code == 0
    text = " ".join(ran.stdout.split())
    assert "deploy" in text and "rollback" in text and "3 stage locked" in text


@pytest.mark.parametrize("args, message", [
    (["deploy", "demo", "rev=1", "--bogus"], "No such option '--bogus'"),
    (["deploy", "demo", "rev=1", "colour"], "unexpected argument 'colour'"),
    (["deploy", "demo", "rev=1", "rev=2"], "rev= is given twice"),
    (["deploy", "demo", "tag=1"], "unknown setting tag="),
    (["rollback", "demo", "release=latest"], "release=latest is not a release number"),
    (["scale", "demo", "web=lots"], "web=lots: the count must be a whole number"),
    (["render", "demo"], "missing rev="),
    (["diff", "demo"], "missing rev="),
    (["local-cluster", "publish", "no-tag-here"], "is not REPOSITORY:TAG"),
])
def test_usage_errors_exit_2(args, message):
    ran = skycap("--project", str(ROOT), *args)
    assert ran.code == 2, ran.stderr
    assert message in ran.stderr


def test_no_project_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = skycap("status", "demo")
    assert ran.code == 2
    assert "no deploy project found" in ran.stderr and "--project" in ran.stderr


def test_an_unexpected_error_is_short_on_screen_and_whole_in_a_file(monkeypatch):
    from skycap.commands import history as history_command

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(history_command, "history", broken)
    ran = skycap("--project", str(ROOT), "history", "demo")
    assert ran.code == 1
    assert "unexpected RuntimeError: a bug" in ran.stderr
    crash = Path(ran.stderr.split("traceback is in ")[1].split(";")[0])
    assert "RuntimeError: a bug" in crash.read_text()


def test_help_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys; from skycap.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('kubernetes', 'fabric', 'paramiko', 'jinja2', 'requests', 'yaml')\n"
            "         if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out
