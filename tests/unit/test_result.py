import json

from videogen_runner.result import TERMINATION_MESSAGE_LIMIT, RunResult, VideoOutput


def test_termination_message_is_compact_json():
    r = RunResult(task_id="a", status="succeeded", exit_code=0, seed=1,
                  output=VideoOutput(path="/o.mp4", bytes=10, sha256="0" * 64, frames=9, width=64, height=64, fps=16))
    doc = json.loads(r.termination_message())
    assert doc["output"]["sha256"] == "0" * 64 and "reason" not in doc


def test_long_messages_are_cut_to_the_kubelet_limit():
    r = RunResult(task_id="a", status="failed", exit_code=1, reason="InternalError", message="é" * 10_000)
    text = r.termination_message()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    doc = json.loads(text)
    assert doc["reason"] == "InternalError" and doc["message"].endswith("…")
