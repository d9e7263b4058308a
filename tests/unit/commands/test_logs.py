"""skycap.commands.logs: reading many pods' logs at once, READERS at a time, each result in its source's place."""

from __future__ import annotations

import threading

from skycap.commands import logs


def test_read_each_keeps_the_order_and_the_errors_in_place():
    def read(source):
        if source == 3:
            raise OSError("pod 3 is gone")
        return source * 10

    results = logs.read_each(read, list(range(12)))
    assert [r for i, r in enumerate(results) if i != 3] == [i * 10 for i in range(12) if i != 3]
    assert isinstance(results[3], OSError)


def test_read_each_reads_readers_at_once_and_no_more(monkeypatch):
    monkeypatch.setattr(logs, "READERS", 3)
    together = threading.Barrier(3, timeout=60)  # passes only when three reads run at once
    running, most, lock = [0], [0], threading.Lock()

    def read(source):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        together.wait()
        with lock:
            running[0] -= 1
        return source

    assert logs.read_each(read, list(range(9))) == list(range(9))
    assert most[0] == 3


def test_one_source_is_read_on_the_calling_thread():
    assert logs.read_each(lambda source: threading.current_thread() is threading.main_thread(), ["one"]) == [True]
    assert logs.read_each(lambda source: source, []) == []
