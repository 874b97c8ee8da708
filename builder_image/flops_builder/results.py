"""The builder's last stdout line, which the operator reads from the service's log tail.

    FLOPS-BUILD-RESULT {"commit": ..., "entrypoint": ..., "learner": "<ref>@sha256:...",
                        "aggregator": "<ref>@sha256:...", "cache": {"images": "hit|built",
                        "deps": "hit|built|none", "code": "hit|built"}, "seconds": 12.3}
    FLOPS-BUILD-ERROR  {"step": ..., "field": ... or null, "message": ...}

One JSON object on one line each. `parse` finds the last such line in whatever the log holds (a runtime may put
a timestamp or stream name before it, and a log tail may cut the first lines).
"""

from __future__ import annotations

import json
import re

RESULT = "FLOPS-BUILD-RESULT"
ERROR = "FLOPS-BUILD-ERROR"
_LINE = re.compile(rf"(?:^|\s)({RESULT}|{ERROR}) (\{{.*\}})\s*$")


def result_line(commit: str, entrypoint: str, learner: str, aggregator: str, cache: dict[str, str],
                seconds: float) -> str:
    body = {"commit": commit, "entrypoint": entrypoint, "learner": learner, "aggregator": aggregator,
            "cache": cache, "seconds": round(seconds, 1)}
    return f"{RESULT} {json.dumps(body, separators=(',', ':'))}"


def error_line(step: str, field: str | None, message: str) -> str:
    # One line whatever the message holds: the operator reads lines.
    body = {"step": step, "field": field, "message": " ".join(message.split())}
    return f"{ERROR} {json.dumps(body, separators=(',', ':'))}"


def parse(logs: str) -> dict | None:
    """The last result or error line in `logs`: the result's fields with "ok": True, or
    {"ok": False, "step", "field", "message"}; None when there is neither (still running, or cut off)."""
    for line in reversed(logs.splitlines()):
        match = _LINE.search(line)
        if not match:
            continue
        try:
            body = json.loads(match[2])
        except ValueError:
            continue  # a line cut in the middle of its JSON: an earlier one may be whole
        if not isinstance(body, dict):
            continue
        if match[1] == RESULT:
            return {"ok": True, **body}
        return {"ok": False, "step": body.get("step"), "field": body.get("field"), "message": body.get("message")}
    return None
