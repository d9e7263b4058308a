"""skycap.cluster.kinds.job: failed, complete, or doomed by pods that cannot start."""

from __future__ import annotations

from tests.unit.cluster.kinds.objects import check, job, pod


def test_a_failed_job_names_its_failed_pods():
    failed = job({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"})
    pods = [pod("m-b", failed, phase="Failed", ready=False), pod("m-a", failed, phase="Failed", ready=False),
            pod("m-c", failed)]
    status = check(failed, *pods)
    assert (status.state, status.reason, status.pods) == ("failed", "BackoffLimitExceeded", ["m-a", "m-b"])


def test_a_job_whose_pods_cannot_start_fails_without_waiting_for_its_backoff():
    running = job(active=2)
    pods = [pod(f"m-{n}", running, ready=False, waiting="InvalidImageName") for n in "ab"]
    status = check(running, *pods)
    assert status.state == "failed"
    assert status.reason == "2 of 2 pods has an invalid image name reg/app:1"
    assert (status.desired, status.updated) == (3, 2)


def test_a_job_counts_its_completions():
    assert check(job(succeeded=1, active=1)).reason == "1 of 3 completions"
    assert check(job({"type": "Complete", "status": "True"}, succeeded=3)).reason == "complete (3 pods succeeded)"
    assert check(job({"type": "Complete", "status": "False"})).state == "waiting"
