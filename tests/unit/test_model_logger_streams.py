"""The forked model logger's child writes around Flower's mirroring of stdout/stderr into a queue (drained by a
ServerApp thread the child does not have, behind a lock the fork may have caught held)."""

from __future__ import annotations

import io
import sys
from queue import Queue

from flwr.supercore.logger import console_handler, mirror_output_to_queue

from flops_aggregator import model_logger


def test_the_child_unmirrors_what_flowers_serverapp_mirrors(monkeypatch):
    streams = {name: io.TextIOWrapper(io.BytesIO(), write_through=True) for name in ("stdout", "stderr")}
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    monkeypatch.setattr(console_handler, "stream", console_handler.stream)
    queue: Queue = Queue()
    mirror_output_to_queue(queue)  # what flwr-serverapp does at its start
    print("mirrored")
    assert [queue.get_nowait() for _ in range(queue.qsize())] == ["mirrored", "\n"]
    model_logger.unmirror_streams()
    print("from the child")
    print("and its errors", file=sys.stderr)
    assert queue.empty()
    assert streams["stdout"].buffer.getvalue() == b"mirrored\nfrom the child\n"
    assert streams["stderr"].buffer.getvalue() == b"and its errors\n"
