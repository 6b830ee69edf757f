"""``trainer.deterministic``: torch's reproducibility settings for the length of a run, and the
cuBLAS workspace variable set before any CUDA work; false changes nothing. (Bit-identical
repeat runs on CUDA: tests/gpu/test_precision_cuda.py.)"""

from __future__ import annotations

import os

import pytest
import torch

from framework import hookimpl
from framework.devices import CUBLAS_WORKSPACE_CONFIG, CUBLAS_WORKSPACE_ENV
from framework.errors import NonFiniteLossError


class SettingsSeen:
    """torch's reproducibility settings and the cuBLAS variable as the run's first step sees them."""

    def __init__(self) -> None:
        self.seen: dict = {}

    @hookimpl
    def framework_fit_start(self, state):
        self.seen = torch_settings()


def torch_settings() -> dict:
    return {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas": os.environ.get(CUBLAS_WORKSPACE_ENV),
    }


@pytest.fixture
def settings(manager, monkeypatch):
    """The recorder registered; torch's settings and the variable put back after the test
    (unset at its start, whatever the environment had)."""
    monkeypatch.setenv(CUBLAS_WORKSPACE_ENV, "recorded so that teardown restores the environment")
    monkeypatch.delenv(CUBLAS_WORKSPACE_ENV)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    recorder = SettingsSeen()
    manager.register_plugin(recorder, "settings_seen", "test")
    yield recorder
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark = before[2]


def test_deterministic_sets_torch_for_the_run_and_restores_it_after(train, settings):
    torch.backends.cudnn.benchmark = True  # as a caller may have it
    assert not torch.are_deterministic_algorithms_enabled()
    result = train(["+task=linear", "trainer.deterministic=true", "trainer.max_steps=5", "logger=[]"])
    assert result["status"] == "completed"
    assert settings.seen == {"deterministic": True, "warn_only": False, "cudnn_benchmark": False,
                             "cublas": CUBLAS_WORKSPACE_CONFIG}
    after = torch_settings()
    # torch's flags are the caller's again; the variable stays: cuBLAS configured the process with it
    assert after == {"deterministic": False, "warn_only": False, "cudnn_benchmark": True,
                     "cublas": CUBLAS_WORKSPACE_CONFIG}


def test_a_cublas_setting_from_the_environment_is_kept(train, settings, monkeypatch):
    monkeypatch.setenv(CUBLAS_WORKSPACE_ENV, ":16:8")
    train(["+task=linear", "trainer.deterministic=true", "trainer.max_steps=5", "logger=[]"])
    assert settings.seen["cublas"] == ":16:8" and os.environ[CUBLAS_WORKSPACE_ENV] == ":16:8"


def test_deterministic_false_changes_nothing(train, settings):
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = True
    train(["+task=linear", "trainer.deterministic=false", "trainer.max_steps=5", "logger=[]"])
    expected = {"deterministic": True, "warn_only": True, "cudnn_benchmark": True, "cublas": None}
    assert settings.seen == expected and torch_settings() == expected


def test_a_failed_deterministic_run_restores_torch_too(train, settings):
    with pytest.raises(NonFiniteLossError):
        train(["+task=polyfit", "optimizer=sgd", "optimizer.lr=1", "trainer.deterministic=true",
               "trainer.max_steps=200", "logger=[]"])
    assert settings.seen["deterministic"] and not torch.are_deterministic_algorithms_enabled()


def test_two_runs_in_one_process_each_get_their_own_setting(train, settings):
    train(["+task=linear", "trainer.deterministic=true", "trainer.max_steps=3", "logger=[]"])
    assert settings.seen["deterministic"]
    train(["+task=linear", "trainer.max_steps=3", "logger=[]"])
    assert not settings.seen["deterministic"]


def test_deterministic_runs_give_the_plain_results_on_the_cpu(train, recorder, settings):
    """CPU kernels are deterministic already: the setting changes no number there."""
    train(["+task=linear2d", "trainer.deterministic=true", "logger=[]"])
    deterministic = dict(recorder.final)
    train(["+task=linear2d", "logger=[]"])
    for name, value in deterministic.items():
        assert torch.equal(value, recorder.final[name]), name
