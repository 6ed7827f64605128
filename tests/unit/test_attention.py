"""The attention backend is verified by running it, never assumed from what is installed."""

import torch

from videogen_runner import attention


def test_a_backend_that_cannot_run_here_is_not_chosen():
    cpu = torch.device("cpu")
    for requested in ("xformers", "_flash_3", "no_such_backend", "flash_hub"):
        assert attention.choose(requested, cpu, torch.float32, head_dim=16) == "native"
    assert attention.works("native", cpu, torch.float32, head_dim=16)
    assert not attention.works("xformers", cpu, torch.float32)


def test_a_backend_that_runs_here_is_the_one_used():
    cpu = torch.device("cpu")
    assert attention.choose("_native_math", cpu, torch.float32, head_dim=16) == "_native_math"
    assert attention.choose("_native_flash", cpu, torch.float32, head_dim=16) == "_native_flash"
    # Splitting the sequence over processes needs a backend that can: the math one cannot.
    assert attention.choose("_native_math", cpu, torch.float32, head_dim=16, context_parallel=True) == "native"


def test_the_requests_backends_are_diffusers_own_less_those_downloaded_at_run_time():
    from diffusers.models.attention_dispatch import AttentionBackendName

    from videogen_runner.request import ATTENTION_BACKENDS

    local = {name.value for name in AttentionBackendName if not name.value.endswith("_hub")}
    assert set(ATTENTION_BACKENDS) == local | {"auto"} and len(ATTENTION_BACKENDS) == len(local) + 1
