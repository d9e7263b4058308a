"""/healthz and /metrics (Prometheus text format) of a running lb-sync, on a loopback port by default."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from skycap.errors import BadInput

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """What /metrics shows; written by the sync loop, read by the server thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.members: dict[tuple[str, str], int] = {}     # (pool, state) -> count
        self.in_step: dict[str, int] = {}                  # pool -> 1/0
        self.changes: dict[tuple[str, str], int] = {}     # (pool, action) -> count
        self.api_errors: dict[str, int] = {}              # "balancer" / "kubernetes" -> count
        self.latency_counts = [0] * len(LATENCY_BUCKETS)
        self.latency_sum, self.latency_total = 0.0, 0
        self.healthy, self.health_reason = False, "starting: the watches have not synced yet"

    def set_pool(self, pool: str, states: dict[str, int], in_step: bool) -> None:
        with self.lock:
            for key in [k for k in self.members if k[0] == pool]:
                self.members[key] = 0
            for state, count in states.items():
                self.members[(pool, state)] = count
            self.in_step[pool] = int(in_step)

    def changed(self, pool: str, action: str) -> None:
        with self.lock:
            self.changes[(pool, action)] = self.changes.get((pool, action), 0) + 1

    def error(self, source: str) -> None:
        with self.lock:
            self.api_errors[source] = self.api_errors.get(source, 0) + 1

    def observe_latency(self, seconds: float) -> None:
        with self.lock:
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.latency_counts[index] += 1
            self.latency_sum += seconds
            self.latency_total += 1

    def health(self, healthy: bool, reason: str) -> None:
        with self.lock:
            self.healthy, self.health_reason = healthy, reason

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP skycap_lb_pool_members Members of each pool, by state.",
                     "# TYPE skycap_lb_pool_members gauge"]
            lines += [f'skycap_lb_pool_members{{pool="{p}",state="{s}"}} {n}' for (p, s), n in sorted(self.members.items())]
            lines += ["# HELP skycap_lb_pool_in_step 1 when the pool's members equal the Service's ready endpoints.",
                      "# TYPE skycap_lb_pool_in_step gauge"]
            lines += [f'skycap_lb_pool_in_step{{pool="{p}"}} {n}' for p, n in sorted(self.in_step.items())]
            lines += ["# HELP skycap_lb_changes_total Changes made to pools.", "# TYPE skycap_lb_changes_total counter"]
            lines += [f'skycap_lb_changes_total{{pool="{p}",action="{a}"}} {n}'
                      for (p, a), n in sorted(self.changes.items())]
            lines += ["# HELP skycap_lb_api_errors_total Failed calls, by API.",
                      "# TYPE skycap_lb_api_errors_total counter"]
            lines += [f'skycap_lb_api_errors_total{{api="{a}"}} {n}' for a, n in sorted(self.api_errors.items())]
            lines += ["# HELP skycap_lb_sync_latency_seconds Time from an endpoint change to the pool change.",
                      "# TYPE skycap_lb_sync_latency_seconds histogram"]
            lines += [f'skycap_lb_sync_latency_seconds_bucket{{le="{b:g}"}} {n}'
                      for b, n in zip(LATENCY_BUCKETS, self.latency_counts)]
            lines += [f'skycap_lb_sync_latency_seconds_bucket{{le="+Inf"}} {self.latency_total}',
                      f"skycap_lb_sync_latency_seconds_sum {self.latency_sum:.6f}",
                      f"skycap_lb_sync_latency_seconds_count {self.latency_total}"]
        return "\n".join(lines) + "\n"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BadInput(f"--listen {text!r} is not HOST:PORT", "like 127.0.0.1:9180")
    return host.strip("[]"), int(port)


def serve(metrics: Metrics, listen: str) -> ThreadingHTTPServer:
    """Start the server on a thread; the caller shuts it down."""
    host, port = parse_listen(listen)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                self._answer(200, metrics.render(), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                with metrics.lock:
                    healthy, reason = metrics.healthy, metrics.health_reason
                self._answer(200 if healthy else 503, ("ok: " if healthy else "not ok: ") + reason + "\n")
            else:
                self._answer(404, "only /healthz and /metrics here\n")

        def _answer(self, code: int, text: str, kind: str = "text/plain") -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # no access log on stderr
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise BadInput(f"cannot listen on {listen}: {exc.strerror or exc}",
                       "pick another --listen HOST:PORT") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="lb-metrics", daemon=True).start()
    return server
