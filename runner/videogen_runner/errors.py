"""Failures the runner can end with, and the exit codes that tell them apart.

Codes 10-19 are permanent (the Job must not retry them: the same request fails the same way);
codes 20-29 and 143 are retryable. The operator's podFailurePolicy is built from this table.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # an unexpected error: retried, within the Job's backoff limit
    INVALID_REQUEST = 10
    MODEL_NOT_FOUND = 11
    OUT_OF_GPU_MEMORY = 12
    UPLOAD_FAILED = 20
    INPUT_UNAVAILABLE = 21
    TERMINATED = 143  # SIGTERM (preemption, deletion, suspend): 128 + 15

    @property
    def permanent(self) -> bool:
        return 10 <= self.value <= 19


PERMANENT_EXIT_CODES = [code.value for code in ExitCode if code.permanent]


class RunnerError(Exception):
    """An expected failure: carries the exit code and a CamelCase reason for the status."""

    exit_code = ExitCode.INTERNAL
    reason = "InternalError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(RunnerError):
    exit_code = ExitCode.INVALID_REQUEST
    reason = "InvalidRequest"


class ModelNotFound(RunnerError):
    exit_code = ExitCode.MODEL_NOT_FOUND
    reason = "ModelNotFound"


class OutOfGpuMemory(RunnerError):
    exit_code = ExitCode.OUT_OF_GPU_MEMORY
    reason = "OutOfGpuMemory"


class UploadFailed(RunnerError):
    exit_code = ExitCode.UPLOAD_FAILED
    reason = "UploadFailed"


class InputUnavailable(RunnerError):
    exit_code = ExitCode.INPUT_UNAVAILABLE
    reason = "InputUnavailable"


class Terminated(RunnerError):
    exit_code = ExitCode.TERMINATED
    reason = "Terminated"
