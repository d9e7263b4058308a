"""CronJob: its pod template is inside the template of the Jobs it makes; nothing runs at deploy time."""

from __future__ import annotations

from skycap.cluster.kinds.base import Kind

KIND = Kind("CronJob", ("batch", "cronjobs"), runs_pods=True, pod_template=("spec", "jobTemplate", "spec", "template"))
