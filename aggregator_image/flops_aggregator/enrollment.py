"""Where learners present their certificates: HTTPS on the aggregator's enrollment address (contract
FLOPS_ENROLL_ADDRESS), with the SuperLink's certificate.

    POST /enroll   body: the learner's certificate (PEM, or base64 of PEM as the operator renders it)
    200 admitted   its key is registered with the SuperLink
    202 waiting    a learner above the learner count: registered once the operator counts it in
    403 refused    not a learner certificate the project's CA issued (or expired)
    409 superseded a newer certificate for the same learner is held (its replacement enrolled)
    503            the SuperLink's Control API failed: ask again

The answer is JSON {"verdict": ..., "message": ...}. Nothing here is secret: a certificate admits only the key it
names, and only the holder of that key's private half can then join (Flower's SuperNode authentication). The
handshake and the request of each connection happen in its own thread, with a deadline.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from flops_runtime import proc

from .admission import TlsFiles, Verdict

log = logging.getLogger("flops_aggregator")

PATH = "/enroll"
MAX_BODY = 16 * 1024
CONNECTION_SECONDS = 10
STATUS = {Verdict.admitted: 200, Verdict.waiting: 202, Verdict.refused: 403, Verdict.superseded: 409}

Offer = Callable[[str], "tuple[Verdict, str]"]


class _Handler(BaseHTTPRequestHandler):
    server: "EnrollmentServer"
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != PATH:
            return self._answer(404, "refused", f"no {self.path}: POST {PATH}")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return self._answer(413 if length > MAX_BODY else 400, "refused", "a certificate is the body")
        try:
            body = self.rfile.read(length).decode("ascii")
        except (OSError, UnicodeDecodeError):
            return self._answer(400, "refused", "not a certificate")
        try:
            verdict, message = self.server.offer(body)
        except Exception as exc:  # the Control API: the learner asks again
            log.warning("enrollment not completed: %s", exc)
            return self._answer(503, "retry", "the SuperLink did not answer; ask again")
        self._answer(STATUS[verdict], verdict.value, message)

    def _answer(self, status: int, verdict: str, message: str) -> None:
        body = json.dumps({"verdict": verdict, "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("enrollment %s: " + format, self.address_string(), *args)


class EnrollmentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, offer: Offer) -> None:
        self.context, self.offer = context, offer
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def finish_request(self, request: socket.socket, client_address) -> None:
        """In the connection's thread: the TLS handshake, then the request, within CONNECTION_SECONDS each."""
        request.settimeout(CONNECTION_SECONDS)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("enrollment from %s: no TLS handshake (%s)", client_address, exc)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class Enrollment:
    """The enrollment server, serving in a thread of its own until closed."""

    def __init__(self, address: str, tls: TlsFiles, offer: Offer) -> None:
        host, port = proc.split_address(address)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(tls.cert), str(tls.key))
        self.server = EnrollmentServer((host, port), context, offer)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="enrollment", daemon=True)
        self.thread.start()
        log.info("taking learner certificates on %s", address)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
