"""skycap.commands.running.rest's HTTP/1.0 requests, against a loopback server that answers one canned response."""

from __future__ import annotations

import socket
import threading

import pytest

from skycap.commands.running.rest import ApiRefused, Endpoint


def serve_once(answer: bytes) -> tuple[str, list[bytes]]:
    """A server on loopback that reads one request, sends `answer` and closes; its URL and what it read."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def answer_one():
        with listener:
            connection, _ = listener.accept()
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(4096)
                requests.append(request)
                connection.sendall(answer)

    threading.Thread(target=answer_one, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/prefix", requests


def test_get_sends_the_path_query_and_token_and_returns_the_body():
    url, requests = serve_once(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nline 1\nline 2\n")
    body = Endpoint(url, None, "secret").get("/api/v1/pods", {"labelSelector": "a=b,c=d", "tailLines": None}, 5)
    assert body == b"line 1\nline 2\n"
    lines = requests[0].decode().split("\r\n")
    assert lines[0] == "GET /prefix/api/v1/pods?labelSelector=a%3Db%2Cc%3Dd HTTP/1.0"
    assert "Authorization: Bearer secret" in lines
    assert f"Host: {url.split('/')[2]}" in lines


def test_an_error_status_is_refused_with_the_servers_words():
    url, _ = serve_once(b'HTTP/1.0 403 Forbidden\r\nContent-Length: 20\r\n\r\n{"message": "no no"}')
    with pytest.raises(ApiRefused) as refused:
        Endpoint(url, None, None).get("/api/v1/pods", {}, 5)
    assert (refused.value.status, refused.value.reason) == (403, "Forbidden")
    assert refused.value.body == b'{"message": "no no"}'


@pytest.mark.parametrize("answer", [b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"SSH-2.0-OpenSSH\r\n", b""])
def test_a_cut_or_foreign_answer_is_a_connection_error(answer):
    url, _ = serve_once(answer)
    with pytest.raises(ConnectionError):
        Endpoint(url, None, None).get("/api/v1/pods", {}, 5)
