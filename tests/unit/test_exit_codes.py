"""The runner's failures against the Job's podFailurePolicy: what fails at once, what is retried."""

import inspect

from videogen_operator.job import build_job, build_request
from videogen_operator.models import VideoGenerationSpec
from videogen_operator.settings import Settings
from videogen_runner import errors
from videogen_runner.errors import ExitCode, RunnerError

# Failures that the same request could get past on another try.
RETRYABLE = {"UploadFailed", "InputUnavailable", "InternalError", "Terminated"}


def fail_job_codes() -> set[int]:
    """The exit codes with which the operator's Job fails at once, from the Job itself."""
    spec = VideoGenerationSpec.model_validate({"model": {"preset": "ti2v-5b", "hostPath": "/m"}, "prompt": "p"})
    body = {"apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration",
            "metadata": {"name": "x", "namespace": "n", "uid": "u"}}
    settings = Settings(s3_bucket="videos")
    job = build_job(body, spec, build_request(spec, "n", "x", settings), settings)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    return {code for r in rules if r["action"] == "FailJob" for code in r["onExitCodes"]["values"]}


def test_permanent_failures_fail_the_job_and_retryable_ones_never_do():
    failures = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, RunnerError)]
    assert {cls.reason for cls in failures} >= RETRYABLE | {"InvalidRequest", "ModelNotFound", "OutOfGpuMemory"}
    codes = fail_job_codes()
    for cls in failures:
        assert (cls.exit_code in codes) == (cls.reason not in RETRYABLE), cls.__name__
    assert ExitCode.TERMINATED not in codes and ExitCode.OK not in codes  # preemption is retried
    assert len({cls.exit_code for cls in failures}) == len(failures)  # one code, one reason
