"""The builder's registry client: references, which failures are retried, what an error says, and the Bearer
token login (against a small stand-in on loopback that records what it was asked)."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import requests

from flops_builder.errors import BuildError
from flops_builder.registry import Client, Reference, is_transient, status_of

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, host, repository, tag, digest", [
    ("registry.example.com/flops/learner:0.1.0", "registry.example.com", "flops/learner", "0.1.0", None),
    ("127.0.0.1:5000/flops/learner:0.1.0", "127.0.0.1:5000", "flops/learner", "0.1.0", None),
    ("localhost:5000/a/b/c", "localhost:5000", "a/b/c", None, None),
    ("localhost/x:1", "localhost", "x", "1", None),
    (f"r.io/x@{DIGEST}", "r.io", "x", None, DIGEST),
    (f"r.io:443/x:1.0@{DIGEST}", "r.io:443", "x", "1.0", DIGEST),
])
def test_reference_parse(text, host, repository, tag, digest):
    ref = Reference.parse(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repository, tag, digest)
    assert str(ref) == text
    assert ref.reference == (digest or tag or "latest")


@pytest.mark.parametrize("text", ["flops/learner:0.1.0", "learner", "", "r.io/", "r.io/x@sha256:short"])
def test_reference_without_registry_is_refused(text):
    with pytest.raises(ValueError):
        Reference.parse(text)


def http_error(status: int) -> requests.exceptions.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.exceptions.HTTPError(response=response)


@pytest.mark.parametrize("exc, transient", [
    (requests.exceptions.ConnectionError("refused"), True),
    (requests.exceptions.ReadTimeout("slow"), True),
    (requests.exceptions.ChunkedEncodingError("cut"), True),
    (requests.exceptions.SSLError("certificate verify failed"), False),
    (http_error(500), True),
    (http_error(503), True),
    (http_error(429), True),
    (http_error(401), False),
    (http_error(403), False),
    (http_error(404), False),
    (http_error(400), False),
    (ValueError("x"), False),
])
def test_what_is_retried(exc, transient):
    assert is_transient(exc) is transient


@pytest.mark.parametrize("status, step, words", [
    (401, "registry", ["refused the login of user 'bob'", "credentials"]),
    (403, "push", ["denied", "bob", "403"]),
    (404, "registry", ["not found"]),
    (400, "push", ["failed"]),
])
def test_errors_name_the_registry_and_what_to_do(status, step, words):
    error = Client("r.io", username="bob", password="secret").error(step, "reading manifest x in t/y",
                                                                   http_error(status))
    assert isinstance(error, BuildError) and error.step == step and "r.io" in error.message
    assert all(word in error.message for word in words), error.message
    assert "secret" not in error.message
    assert status_of(http_error(status)) == status


def test_an_unreachable_registry_is_retried_then_named():
    client = Client("127.0.0.1:9", tls_verify=False, attempts=2, wait_max=0.01, timeout=2)
    with pytest.raises(BuildError) as error:
        client.repository("x").has_blob(DIGEST)
    assert error.value.step == "registry" and "unreachable" in error.value.message
    assert "after 2 attempts" in error.value.message


class StandIn:
    """A registry API stand-in: Bearer challenges, a token realm with Basic auth, and scripted failures."""

    def __init__(self, *, user: str = "bob", password: str = "pw", failures: int = 0):
        self.user, self.password, self.failures = user, password, failures
        self.requests: list[str] = []
        self.token_scopes: list[list[str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self):
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                self.handle_any()

            def do_HEAD(self):
                self.handle_any()

            def handle_any(self):
                stand_in.requests.append(f"{self.command} {self.path.split('?')[0]}")
                if self.path.startswith("/token"):
                    login = base64.b64encode(f"{stand_in.user}:{stand_in.password}".encode()).decode()
                    if self.headers.get("Authorization") != f"Basic {login}":
                        return self.reply(401)
                    query = requests.utils.urlparse(self.path).query
                    stand_in.token_scopes.append([p.split("=", 1)[1] for p in query.split("&")
                                                  if p.startswith("scope=")])
                    return self.reply(200, {"Content-Type": "application/json"}, b'{"token": "T0KEN"}')
                if stand_in.failures > 0:
                    stand_in.failures -= 1
                    return self.reply(503)
                if self.headers.get("Authorization") != "Bearer T0KEN":
                    challenge = (f'Bearer realm="http://{stand_in.host}/token",service="stand-in",'
                                 f'scope="repository:team/x:pull"')
                    return self.reply(401, {"WWW-Authenticate": challenge})
                return self.reply(200, {"Content-Length": "3", "Docker-Content-Digest": DIGEST})

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.stop()


def test_bearer_token_is_fetched_with_the_login_for_the_challenged_scope(stand_in):
    client = Client(stand_in.host, username="bob", password="pw", tls_verify=False, attempts=1)
    assert client.scheme == "http"  # a registry marked insecure that does not speak TLS
    assert client.repository("team/x").has_blob(DIGEST) is True
    assert stand_in.token_scopes == [["repository%3Ateam%2Fx%3Apull"]]
    assert client.repository("team/x").has_blob(DIGEST) is True


def test_a_refused_token_login_fails_at_once(stand_in):
    client = Client(stand_in.host, username="bob", password="wrong", tls_verify=False, attempts=5)
    with pytest.raises(BuildError) as error:
        client.repository("team/x").has_blob(DIGEST)
    assert error.value.step == "registry" and "refused the login of user 'bob'" in error.value.message
    assert stand_in.requests.count("GET /token") == 1  # not retried


def test_transient_failures_are_retried(stand_in):
    stand_in.failures = 2
    client = Client(stand_in.host, username="bob", password="pw", tls_verify=False, attempts=3, wait_max=0.01)
    assert client.repository("team/x").has_blob(DIGEST) is True
    assert stand_in.requests.count(f"HEAD /v2/team/x/blobs/{DIGEST}") >= 3


def test_transient_failures_give_up_after_the_attempts(stand_in):
    stand_in.failures = 10
    client = Client(stand_in.host, username="bob", password="pw", tls_verify=False, attempts=2, wait_max=0.01)
    with pytest.raises(BuildError) as error:
        client.repository("team/x").has_blob(DIGEST)
    assert "503" in error.value.message
