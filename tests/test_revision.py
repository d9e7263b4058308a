"""skycap.sources.mercurial against real Mercurial repositories (local, and served by `hg serve`)."""

from __future__ import annotations

import tarfile
import tempfile

import pytest

from skycap.errors import BadInput
from skycap.sources import mercurial as revision
from tests.fixtures.registry import free_port


def resolve_error(source, rev, template="{node|short}") -> str:
    with pytest.raises(BadInput) as caught:
        revision.resolve(str(source), rev, template)
    return str(caught.value)


@pytest.mark.parametrize("rev, name", [
    ("v1.0", "second"),                       # tag
    ("feature-x", "third"),                   # bookmark
    ("stable", "stable"),                     # named branch: its tip
    ("default", "tag-commit"),
    ("tip", "stable"),
    ("first(branch(stable))", "stable"),      # revsets naming one changeset
    ("feature-x^", "second"),
    ("max(ancestors(feature-x) and not v1.0)", "third"),
])
def test_resolves_names_and_revsets(hg_repo, rev, name):
    found = revision.resolve(str(hg_repo.path), rev)
    assert found.node == hg_repo.nodes[name]
    assert found.rev == rev
    assert found.tag == found.node[:12] == found.short


@pytest.mark.parametrize("length", [40, 12, 7])
def test_resolves_full_and_short_hashes(hg_repo, length):
    node = hg_repo.nodes["second"]
    found = revision.resolve(str(hg_repo.path), node[:length])
    assert found.node == node
    assert found.rev == node[:length]


def test_revision_carries_branch_user_date_and_first_line(hg_repo):
    found = revision.resolve(str(hg_repo.path), hg_repo.nodes["first"])
    assert found.branch == "default"
    assert found.user == "Test Author <test@example.com>"
    assert found.summary == "Add the web service"
    assert found.date == "2023-11-14 22:14:20 +0000"


def test_image_tag_template(hg_repo):
    found = revision.resolve(str(hg_repo.path), "stable", "{branch}-{node|short}")
    assert found.tag == f"stable-{hg_repo.nodes['stable'][:12]}"
    assert revision.resolve(str(hg_repo.path), "feature-x", "{latesttag}").tag == "v1.0"


def test_image_tag_that_is_no_docker_tag_is_refused(hg_repo):
    message = resolve_error(hg_repo.path, "v1.0", "{desc}")
    assert (f"image_tag template '{{desc}}' makes 'Add the worker' for {hg_repo.nodes['second'][:12]}, "
            "which is not a valid image tag") in message
    assert "1 to 128 letters, digits, '_', '.' and '-'" in message


def test_image_tag_template_with_a_syntax_error(hg_repo):
    message = resolve_error(hg_repo.path, "v1.0", "{node|")
    assert message.startswith("image_tag template '{node|' is not a valid Mercurial template: ")
    assert "unterminated template expansion" in message


def test_unknown_revision(hg_repo):
    message = resolve_error(hg_repo.path, "no-such-thing")
    assert message.startswith(f"unknown revision 'no-such-thing' in {hg_repo.path}")
    assert "is it committed in that repository?" in message


def test_ambiguous_short_hash_lists_the_candidates(hg_ambiguous):
    repo, prefix = hg_ambiguous
    candidates = [line.split("|") for line in repo.hg("log", "-T", "{node}|{date|isodatesec}|{desc}\n").splitlines()
                  if line.startswith(prefix)]
    message = resolve_error(repo.path, prefix)
    assert message.startswith(f"short hash '{prefix}' is ambiguous in {repo.path}: "
                              f"{len(candidates)} changesets start with it")
    assert len(candidates) >= 2
    for node, date, desc in candidates:
        assert f"{node[:12]}  {date}  {desc}" in message
    assert "give more digits of the hash" in message


def test_revset_naming_several_changesets_says_how_many(hg_repo):
    message = resolve_error(hg_repo.path, "branch(default)")
    assert message.startswith(f"revision 'branch(default)' names 4 changesets in {hg_repo.path}; "
                              "a deploy needs exactly one")
    assert f"{hg_repo.nodes['first'][:12]}  2023-11-14 22:14:20 +0000  Add the web service" in message


def test_revset_naming_many_changesets_shows_a_few(hg_ambiguous):
    repo, _ = hg_ambiguous
    message = resolve_error(repo.path, "all()")
    assert "revision 'all()' names 40 changesets" in message
    assert "... and 35 more" in message


@pytest.mark.parametrize("rev, what", [("none()", "names no changeset"), ("null", "is the null revision"),
                                       ("wdir()", "is the working directory")])
def test_revisions_that_are_no_changeset(hg_repo, rev, what):
    assert what in resolve_error(hg_repo.path, rev)


def test_revset_syntax_error(hg_repo):
    message = resolve_error(hg_repo.path, "max(")
    assert message.startswith("revision 'max(' is not a valid revision or revset: parse error at 4")


@pytest.mark.parametrize("rev, shown", [
    ("tip; rm -rf /", "';'"), ("$(reboot)", "'$'"), ("`id`", "'`'"), ("tip | v1.0", "'|'"),
    ("tip & v1.0", "'&'"), ("tip\nrm", "'\\n'"), ("a\\b", "'\\\\'"), ("tip > x", "'>'"), ("tip\x00", "'\\x00'"),
])
def test_characters_no_revision_has_are_refused_before_hg_runs(tmp_path, rev, shown):
    message = resolve_error(tmp_path / "no-repository-here", rev)  # refused before the repository is looked at
    assert message.startswith(f"revision {rev!r} has characters no revision has: {shown}")


@pytest.mark.parametrize("rev", ["-r", "--config=hooks.pre-log=touch x", " --help"])
def test_revision_that_looks_like_an_option_is_refused(tmp_path, rev):
    assert "starts with '-': a revision is never a command-line option" in resolve_error(tmp_path, rev)


@pytest.mark.parametrize("rev", ["", "   "])
def test_empty_revision(tmp_path, rev):
    assert resolve_error(tmp_path, rev).startswith("the revision is empty")


def test_overlong_revision(tmp_path):
    assert "more than 500 is not a revision" in resolve_error(tmp_path, "a" * 501)


def test_missing_local_repository(tmp_path):
    message = resolve_error(tmp_path / "nowhere", "tip")
    assert message.startswith(f"no Mercurial repository at {tmp_path / 'nowhere'}")
    assert "check the stage's hg: setting" in message


def test_file_url_is_a_local_path(hg_repo):
    assert revision.resolve(f"file://{hg_repo.path}", "v1.0").node == hg_repo.nodes["second"]


def test_unsupported_url_scheme():
    assert resolve_error("ftp://example.com/repo", "tip").startswith(
        "cannot read a Mercurial repository from ftp://example.com/repo")


def test_url_is_cloned_once_into_the_cache_and_pulled_after(hg_served, isolated_home):
    repo = hg_served.repo
    found = revision.resolve(hg_served.url, "v1.0")
    assert found.node == repo.nodes["second"]
    clones = list((isolated_home / ".cache" / "skycap" / "hg").iterdir())
    assert len(clones) == 1 and (clones[0] / ".hg").is_dir()

    repo.update("default")
    newer = repo.commit("Pushed after the first deploy")
    assert revision.resolve(hg_served.url, "default").node == newer
    assert revision.resolve(hg_served.url, "feature-x").node == repo.nodes["third"]
    assert list((isolated_home / ".cache" / "skycap" / "hg").iterdir()) == clones


def test_url_revision_errors(hg_served):
    message = resolve_error(hg_served.url, "not-pushed-yet")
    assert message.startswith(f"unknown revision 'not-pushed-yet' in {hg_served.url}")
    assert "has it been pushed there?" in message


def test_full_node_in_the_cache_needs_no_server(hg_served):
    url, node = hg_served.url, hg_served.repo.nodes["third"]
    revision.resolve(url, "tip")
    hg_served.process.terminate()
    hg_served.process.wait()
    assert revision.resolve(url, node).node == node
    message = resolve_error(url, "default")  # a name can move: it needs the server
    assert message.startswith(f"cannot reach the Mercurial repository {url}: ")
    assert "check the stage's hg: URL, the network, and that the server is up" in message


def test_unreachable_url_is_named():
    url = f"http://127.0.0.1:{free_port()}/platform"
    message = resolve_error(url, "tip")
    assert message.startswith(f"cannot reach the Mercurial repository {url}: ")


def test_password_in_url_is_never_shown():
    url = f"http://deployer:hunter2-secret@127.0.0.1:{free_port()}/platform"
    message = resolve_error(url, "tip")
    assert f"http://deployer:***@127.0.0.1:{url.split(':')[3]}" in message
    assert "hunter2-secret" not in message


def test_archive_writes_the_changeset_files_at_the_root(hg_repo, tmp_path):
    dest = revision.archive(str(hg_repo.path), hg_repo.nodes["second"], tmp_path / "release.tgz")
    with tarfile.open(dest) as tar:
        assert sorted(tar.getnames()) == [".hg_archival.txt", "app.txt"]
        assert tar.extractfile("app.txt").read() == b"Add the worker\n"


def test_archive_from_a_url(hg_served, tmp_path):
    node = revision.resolve(hg_served.url, "stable").node
    with tarfile.open(revision.archive(hg_served.url, node, tmp_path / "r.tgz")) as tar:
        assert tar.extractfile("app.txt").read() == b"Fix for stable\n"


def test_a_password_in_the_url_never_reaches_a_command_line(hg_served_with_auth, tmp_path, monkeypatch):
    served = hg_served_with_auth
    private = tmp_path / "private-tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where the private hgrc goes while hg runs
    assert revision.resolve(served.url, "v1.0").node == served.repo.nodes["second"]  # a clone
    newer = served.repo.commit("Pushed after the clone")
    assert revision.resolve(served.url, "default").node == newer  # a pull
    with tarfile.open(revision.archive(served.url, newer, tmp_path / "r.tgz")) as tar:
        assert tar.extractfile("app.txt").read() == b"Pushed after the clone\n"
    assert served.hits.read_text() == ""  # no process's argv carried the password while hg talked to the server
    assert list(private.iterdir()) == []  # the private hgrc is gone


def test_a_wrong_password_is_refused_without_showing_it(hg_served_with_auth):
    url = hg_served_with_auth.url.replace("hunter2", "hunter3")
    message = resolve_error(url, "tip")
    assert message.startswith("cannot reach the Mercurial repository http://deployer:***@127.0.0.1:")
    assert "hunter3" not in message and "s3cret" not in message
