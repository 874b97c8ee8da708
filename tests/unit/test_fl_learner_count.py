"""Learners scaled while training: the run's flops.learners tag, read by the ServerApp's uploader, handed to the
aggregator's entrypoint through a file (flops_aggregator.admission)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from flops_aggregator import admission, checkpoint_mlflow


@pytest.mark.parametrize("tags, wanted", [
    ({}, None),
    ({"flops.learners": "3"}, 3),
    ({"flops.learners": "0"}, None),
    ({"flops.learners": "-1"}, None),
    ({"flops.learners": "three"}, None),
    ({"flops.stop.requested": "x"}, None),
])
def test_the_servers_app_hands_a_valid_learner_count_to_the_entrypoint(tmp_path, tags, wanted):
    admission.request_learners(tmp_path, tags)
    assert admission.requested_learners(tmp_path) == wanted


def test_a_later_count_replaces_the_earlier_and_a_broken_file_reads_as_none(tmp_path):
    admission.request_learners(tmp_path, {"flops.learners": "3"})
    admission.request_learners(tmp_path, {"flops.learners": "5"})
    assert admission.requested_learners(tmp_path) == 5
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / admission.LEARNERS_FILE).write_text("{half")
    assert admission.requested_learners(tmp_path) is None


class Run:
    def __init__(self, tags):
        self.tags, self.reads = tags, 0
        self.read = threading.Event()

    def get_run(self, run_id):
        self.reads += 1
        self.read.set()
        return SimpleNamespace(data=SimpleNamespace(tags=dict(self.tags)))


def test_the_uploader_gives_the_runs_tags_at_each_read_even_after_a_stop_request(tmp_path):
    client = Run({"flops.learners": "4", checkpoint_mlflow.STOP_TAG: "spec.suspend"})
    seen: list[dict] = []
    got = threading.Event()

    def on_tags(tags):
        seen.append(tags)
        got.set()

    uploader = checkpoint_mlflow.Uploader(client, "r", None, on_tags=on_tags)
    try:
        uploader.offer(None)  # a round boundary with nothing new to upload: the run is read at once
        assert got.wait(30)
        assert uploader.stop_request == "spec.suspend"
        got.clear()
        uploader.offer(None)
        assert got.wait(30), "read again after the stop request: the learner count still matters"
    finally:
        uploader.close()
    assert seen[0]["flops.learners"] == "4"


def test_a_failing_tag_hook_is_logged_and_the_uploader_keeps_reading(tmp_path, caplog):
    client = Run({})
    calls = []

    def on_tags(tags):
        calls.append(tags)
        raise OSError("disk full")

    uploader = checkpoint_mlflow.Uploader(client, "r", None, on_tags=on_tags)
    try:
        uploader.offer(None)
        assert client.read.wait(30)
        client.read.clear()
        uploader.offer(None)
        assert client.read.wait(30)
    finally:
        uploader.close()
    assert calls and uploader.error is None
