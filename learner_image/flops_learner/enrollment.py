"""A learner presents its certificate to the aggregator (flops_aggregator.enrollment) so that its SuperNode's key is
admitted: before the SuperNode first starts, before each restart, and whenever the aggregator answers again after it
was gone (a new aggregator knows no learner until each presents its certificate)."""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from flops_runtime import proc

log = logging.getLogger("flops_learner")

PATH = "/enroll"
TIMEOUT_SECONDS = 10
RETRY_SECONDS = 0.5
VERDICTS = {200: "admitted", 202: "waiting", 403: "refused", 409: "superseded"}
FINAL = ("refused", "superseded")
"""This learner's key will not be admitted: its certificate is not the project's, or its replacement enrolled."""


@dataclass(frozen=True)
class Answer:
    verdict: str
    """admitted, waiting (above the learner count: admitted once the operator counts it in), refused, superseded;
    retry: the aggregator answered but could not decide."""
    message: str


def enroll(address: str, certificate: str, ca_file: Path, timeout: float = TIMEOUT_SECONDS) -> Answer:
    """Present `certificate` at the aggregator's enrollment `address` (trusting only the project's CA). OSError
    (ssl.SSLError among them) when the aggregator cannot be reached over TLS."""
    host, port = proc.split_address(address)
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        connection.request("POST", PATH, body=certificate.encode(), headers={"Content-Type": "text/plain"})
        response = connection.getresponse()
        text = response.read(16 * 1024).decode(errors="replace")
    except http.client.HTTPException as exc:
        raise OSError(f"no answer from {address}: {exc}") from exc
    finally:
        connection.close()
    try:
        message = str(json.loads(text).get("message", ""))
    except (ValueError, AttributeError):
        message = text[:200]
    return Answer(VERDICTS.get(response.status, "retry"), message)


def enroll_until_answered(address: str, certificate: str, ca_file: Path, max_wait: float,
                          stopped=lambda: False) -> Answer | None:
    """Ask until the aggregator decides; None when it did not answer for `max_wait` seconds (or `stopped()`)."""
    started, last_error = time.monotonic(), ""
    while not stopped():
        try:
            answer = enroll(address, certificate, ca_file)
            if answer.verdict != "retry":
                log.info("enrollment at %s: %s (%s)", address, answer.verdict, answer.message)
                return answer
            last_error = answer.message
        except OSError as exc:
            last_error = str(exc)
        if time.monotonic() - started > max_wait:
            log.warning("aggregator enrollment %s unreachable for %.0fs (%s): giving up", address, max_wait,
                        last_error)
            return None
        time.sleep(RETRY_SECONDS)
    return None
