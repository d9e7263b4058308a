"""skycap.cluster.redact: Secret values masked in whatever kubectl prints (JSON, YAML, a diff); the rest kept."""

from __future__ import annotations

import json

from skycap.cluster.labels import LAST_APPLIED
from skycap.cluster.redact import MASK, redact, redact_diff, redact_object


def secret(**extra) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, **extra}


def test_a_secret_in_json_keeps_its_keys_and_loses_its_values():
    applied = json.dumps(secret(stringData={"password": "hunter2"}))
    obj = secret(data={"password": "aHVudGVyMg=="},
                 metadata={"name": "creds", "annotations": {LAST_APPLIED: applied}})
    out = redact(json.dumps(obj))
    assert "hunter2" not in out and "aHVudGVyMg==" not in out
    shown = json.loads(out)
    assert shown["data"] == {"password": MASK}
    assert json.loads(shown["metadata"]["annotations"][LAST_APPLIED])["stringData"] == {"password": MASK}


def test_a_list_holding_a_secret_and_a_config_map_masks_only_the_secret():
    config_map = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"LOG_LEVEL": "debug"}}
    listed = {"kind": "List", "items": [config_map, secret(data={"token": "c2VjcmV0"})]}
    shown = json.loads(redact(json.dumps(listed)))
    assert shown["items"][0]["data"] == {"LOG_LEVEL": "debug"}
    assert shown["items"][1]["data"] == {"token": MASK}


def test_redact_object_copies_and_leaves_the_input_alone():
    obj = secret(data={"a": "b"})
    assert redact_object(obj)["data"] == {"a": MASK}
    assert obj["data"] == {"a": "b"}


def test_an_unreadable_last_applied_annotation_is_masked_whole():
    obj = secret(metadata={"name": "creds", "annotations": {LAST_APPLIED: "{not json"}})
    assert redact_object(obj)["metadata"]["annotations"][LAST_APPLIED] == MASK


def test_a_secret_in_yaml():
    text = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: hunter2\n"
    out = redact(text)
    assert "hunter2" not in out and f"password: '{MASK}'" in out


def test_yaml_that_does_not_parse_is_masked_line_by_line():
    text = "kind: Secret\ndata:\n  password: aHVudGVy\n  token: dG9r\nmetadata: [unclosed\n"
    out = redact(text)
    assert "aHVudGVy" not in out and "dG9r" not in out
    assert f"  password: {MASK}" in out


def test_text_without_a_secret_is_returned_as_it_is():
    for text in ("", "deployment.apps/web configured\n", '{"kind": "ConfigMap", "data": {"a": "b"}}'):
        assert redact(text) == text


def test_a_diff_masks_secret_sections_and_keeps_the_others():
    text = ("diff -u -N /tmp/LIVE/v1.Secret.shop.creds /tmp/MERGED/v1.Secret.shop.creds\n"
            "--- /tmp/LIVE/v1.Secret.shop.creds\n+++ /tmp/MERGED/v1.Secret.shop.creds\n"
            "@@ -1,4 +1,4 @@\n"
            " data:\n"
            "-  password: b2xk\n"
            "+  password: bmV3\n"
            " kind: Secret\n"
            "diff -u -N /tmp/LIVE/v1.ConfigMap.shop.c /tmp/MERGED/v1.ConfigMap.shop.c\n"
            "@@ -1,2 +1,2 @@\n"
            "-  LOG_LEVEL: info\n"
            "+  LOG_LEVEL: debug\n")
    out = redact(text)
    assert "b2xk" not in out and "bmV3" not in out
    assert f"-  password: {MASK} (before)\n" in out and f"+  password: {MASK} (after)\n" in out
    assert "-  LOG_LEVEL: info\n+  LOG_LEVEL: debug\n" in out
    assert " kind: Secret\n" in out  # the mask ends where the data block does
    assert out.count("\n") == text.count("\n")


def test_a_diff_masks_the_last_applied_annotation_and_its_continuation():
    text = ("diff -u -N /tmp/LIVE/v1.Secret.shop.creds /tmp/MERGED/v1.Secret.shop.creds\n"
            "@@ -1,5 +1,5 @@\n"
            " metadata:\n"
            "   annotations:\n"
            f"-    {LAST_APPLIED}: |\n"
            '-      {"stringData":{"password":"hunter2"}}\n'
            "   name: creds\n")
    out = redact_diff(text)
    assert "hunter2" not in out
    assert f"-    {LAST_APPLIED}: {MASK}\n" in out
    assert "   name: creds\n" in out


def test_a_value_kubectl_already_masked_stays_as_it_is():
    text = ("diff -u -N /tmp/LIVE/v1.Secret.shop.creds /tmp/MERGED/v1.Secret.shop.creds\n"
            "@@ -1,2 +1,2 @@\n"
            " data:\n"
            f"-  password: {MASK} (before)\n")
    assert redact_diff(text) == text
