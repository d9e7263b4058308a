"""skycap.cluster.plan: what `skycap diff` and `deploy --dry-run` call a change, read from a kubectl diff."""

from __future__ import annotations

from skycap.cluster.plan import classify_diff, essential_diff, parse_diff, plan_lines
from skycap.cluster.redact import MASK
from skycap.project.render import Manifest, Rendered

NS = "shop"


def file_diff(name: str, *hunks: str) -> str:
    """One object's part of `kubectl diff -u -N`, as kubectl names and prints it."""
    head = (f"diff -u -N /tmp/LIVE-1/{name} /tmp/MERGED-2/{name}\n"
            f"--- /tmp/LIVE-1/{name}\t2024-05-01 12:00:00\n+++ /tmp/MERGED-2/{name}\t2024-05-01 12:00:01\n")
    return head + "".join(hunks)


STAMPS_ONLY = ("@@ -5,8 +5,8 @@ metadata:\n"
               "   annotations:\n"
               "-    skycap.io/release: \"3\"\n"
               "+    skycap.io/release: \"4\"\n"
               "-    skycap.io/node: aaaa\n"
               "+    skycap.io/node: bbbb\n"
               "-  generation: 3\n"
               "+  generation: 4\n"
               "   name: web\n")
IMAGE_CHANGE = ("@@ -30,7 +30,7 @@ spec:\n"
                "       containers:\n"
                "-      - image: reg/web:1\n"
                "+      - image: reg/web:2\n"
                "         name: app\n")
CREATED = ("@@ -0,0 +1,4 @@\n"
           "+apiVersion: v1\n"
           "+kind: ConfigMap\n"
           "+metadata:\n"
           "+  name: web-config\n")


def manifest(api_version: str, kind: str, name: str, namespace: str | None = NS) -> Manifest:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return Manifest({"apiVersion": api_version, "kind": kind, "metadata": metadata}, "web.yaml", "web")


RENDERED = Rendered([manifest("apps/v1", "Deployment", "web"), manifest("v1", "ConfigMap", "web-config"),
                     manifest("v1", "Service", "web"), manifest("rbac.authorization.k8s.io/v1", "ClusterRole",
                                                                "reader", namespace=None)])


def test_each_object_is_created_changed_or_unchanged():
    text = (file_diff(f"apps.v1.Deployment.{NS}.web", STAMPS_ONLY, IMAGE_CHANGE)
            + file_diff(f"v1.ConfigMap.{NS}.web-config", CREATED)
            + file_diff("rbac.authorization.k8s.io.v1.ClusterRole.reader", IMAGE_CHANGE))
    assert classify_diff(RENDERED, text) == {"create": ["ConfigMap/web-config"],
                                             "change": ["Deployment/web", "ClusterRole/reader"],
                                             "unchanged": ["Service/web"]}


def test_a_release_stamp_alone_is_no_change():
    text = file_diff(f"apps.v1.Deployment.{NS}.web", STAMPS_ONLY)
    assert classify_diff(RENDERED, text)["change"] == []
    assert essential_diff(text) == ""


def test_an_empty_diff_leaves_everything_unchanged():
    plan = classify_diff(RENDERED, "")
    assert plan["create"] == plan["change"] == []
    assert len(plan["unchanged"]) == 4


def test_same_name_in_another_group_or_kind_is_not_confused():
    text = file_diff(f"v1.Service.{NS}.web", IMAGE_CHANGE)
    plan = classify_diff(RENDERED, text)
    assert plan["change"] == ["Service/web"]
    assert "Deployment/web" in plan["unchanged"]


def test_the_essential_diff_keeps_real_changes_and_recounts_the_hunk():
    text = file_diff(f"apps.v1.Deployment.{NS}.web", STAMPS_ONLY.replace(
        "   name: web\n", "-  replicas: 2\n+  replicas: 3\n   name: web\n"))
    out = essential_diff(text)
    assert "skycap.io/release" not in out and "generation" not in out
    assert "-  replicas: 2\n+  replicas: 3\n" in out
    # 3 lines before (2 context, 1 removed), 3 after (2 context, 1 added)
    assert "@@ -5,3 +5,3 @@ metadata:\n" in out
    assert out.startswith("diff -u -N ")


def test_a_masked_secret_annotation_is_bookkeeping():
    hunk = ("@@ -3,3 +3,3 @@\n"
            f"-    {MASK} (before)\n"
            f"+    {MASK} (after)\n"
            "   name: creds\n")
    assert essential_diff(file_diff(f"v1.Secret.{NS}.creds", hunk)) == ""


def test_a_created_object_keeps_every_line_even_stamps():
    hunk = "@@ -0,0 +1,2 @@\n+metadata:\n+    skycap.io/release: \"1\"\n"
    text = file_diff(f"v1.ConfigMap.{NS}.web-config", hunk)
    assert essential_diff(text) == text


def test_parse_ignores_text_before_the_first_file_and_keeps_headers_apart():
    text = "kubectl warning: something\n" + file_diff(f"v1.Service.{NS}.web", IMAGE_CHANGE)
    [only] = parse_diff(text)
    assert only.name == f"v1.Service.{NS}.web"
    assert len(only.header) == 3 and len(only.hunks) == 1
    assert not only.created


def test_plan_lines_in_order_create_change_unchanged():
    plan = {"create": ["ConfigMap/a"], "change": ["Deployment/b"], "unchanged": ["Service/c"]}
    assert plan_lines(plan) == ["    create    ConfigMap/a", "    change    Deployment/b",
                                "    unchanged Service/c"]
