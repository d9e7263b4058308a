"""Lines from many sources (pods, containers, hosts) onto one stream, each after its source's prefix.

A line is written as the bytes that came, with nothing added but the prefix, in one write under a
lock, so lines of different sources interleave but never cut into each other."""

from __future__ import annotations

import sys
import threading


class LinePrinter:
    def __init__(self, stream: str = "stdout"):
        self.stream = stream  # "stdout" or "stderr", looked up at each write: tests and pipes swap them
        self.lock = threading.Lock()

    def line(self, prefix: str | None, data: bytes) -> None:
        head = f"[{prefix}] ".encode() if prefix else b""
        self.write(head + data + b"\n")

    def write(self, data: bytes) -> None:
        stream = getattr(sys, self.stream)
        with self.lock:
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                stream.flush()
                buffer.write(data)
                buffer.flush()
            else:
                stream.write(data.decode("utf-8", "replace"))
                stream.flush()


class Lines:
    """Cuts a stream of chunks into lines (without their newline) for `emit`; close() emits the rest."""

    def __init__(self, emit):
        self.emit = emit
        self.pending = b""

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        while b"\n" in self.pending:
            line, _, self.pending = self.pending.partition(b"\n")
            self.emit(line)

    def close(self) -> None:
        if self.pending:
            line, self.pending = self.pending, b""
            self.emit(line)


class Raw:
    """Passes chunks on untouched (one target's output, no prefix): the same face as Lines."""

    def __init__(self, printer: LinePrinter):
        self.printer = printer

    def feed(self, chunk: bytes) -> None:
        self.printer.write(chunk)

    def close(self) -> None:
        pass


def sink(printer: LinePrinter, prefix: str | None):
    """Where one source's output goes: whole lines after the prefix, or, without one, as it comes."""
    return Lines(lambda line: printer.line(prefix, line)) if prefix else Raw(printer)
