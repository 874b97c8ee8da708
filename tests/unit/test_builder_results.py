"""The builder's last line, written and found again in a log tail."""

from __future__ import annotations

import pytest

from flops_builder.results import error_line, parse, result_line

RESULT = result_line("a" * 40, "wine_task:task", "r:5000/t/learner:src-1@sha256:" + "1" * 64,
                     "r:5000/t/aggregator:src-1@sha256:" + "2" * 64,
                     {"images": "built", "deps": "hit", "code": "built"}, 12.345)
ERROR = error_line("push", None, "registry r:5000 refused\nthe login")
PROGRESS = "flops-build: step=fetch http://git/x.git at aaaaaaaaaaaa, path . (0.1s)"


def test_result_line_round_trips():
    parsed = parse(f"{PROGRESS}\n{RESULT}\n")
    assert parsed == {"ok": True, "commit": "a" * 40, "entrypoint": "wine_task:task",
                      "learner": "r:5000/t/learner:src-1@sha256:" + "1" * 64,
                      "aggregator": "r:5000/t/aggregator:src-1@sha256:" + "2" * 64,
                      "cache": {"images": "built", "deps": "hit", "code": "built"}, "seconds": 12.3}


def test_error_line_is_one_line_and_round_trips():
    assert "\n" not in ERROR
    assert parse(ERROR) == {"ok": False, "step": "push", "field": None, "message": "registry r:5000 refused the login"}


@pytest.mark.parametrize("logs, expected", [
    ("", None),
    (PROGRESS, None),                                                   # still running
    (RESULT[:60], None),                                                # cut in the middle of its JSON
    (f"{ERROR}\n{RESULT}", True),                                        # the last one counts
    (f"{RESULT}\n{ERROR}", False),
    (f"{ERROR}\n{RESULT[:60]}", False),                                  # a cut last line: the whole one before it
    (f"2024-01-01T00:00:00Z stdout F {RESULT}", True),                   # a runtime's prefix
    (f"{RESULT}\r\n", True),
    ("FLOPS-BUILD-RESULT [1, 2]", None),                                 # not an object
    ("echo FLOPS-BUILD-RESULTS {}", None),
])
def test_parse_finds_the_last_whole_line(logs, expected):
    parsed = parse(logs)
    assert (parsed if parsed is None else parsed["ok"]) == expected
