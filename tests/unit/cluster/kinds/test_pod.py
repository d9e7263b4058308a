"""skycap.cluster.kinds.pod: a bare pod's verdict."""

from __future__ import annotations

import pytest

from tests.unit.cluster.kinds.objects import check, pod


@pytest.mark.parametrize("kwargs, state, reason", [
    (dict(phase="Succeeded", ready=False), "succeeded", "completed"),
    (dict(), "succeeded", "ready"),
    (dict(ready=False, phase="Pending"), "waiting", "pod p Pending, not ready"),
    (dict(ready=False, phase=None), "waiting", "pod p Pending, not ready"),
    (dict(ready=False, waiting="ErrImagePull", message="manifest unknown"), "failed",
     "pod p cannot pull image reg/app:1 (not found)"),
])
def test_a_bare_pod(kwargs, state, reason):
    status = check(pod("p", **kwargs))
    assert (status.state, status.reason) == (state, reason)
