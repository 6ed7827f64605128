from videogen_runner.errors import PERMANENT_EXIT_CODES, ExitCode


def test_permanent_and_retryable_codes_are_disjoint():
    assert PERMANENT_EXIT_CODES == [10, 11, 12]
    assert not ExitCode.UPLOAD_FAILED.permanent and not ExitCode.TERMINATED.permanent
    assert ExitCode.TERMINATED == 128 + 15
