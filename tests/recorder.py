"""A throw-away plugin that records hook calls and the parameters at fit start and end."""

from __future__ import annotations

import torch

from framework import hookimpl


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.initial: dict[str, torch.Tensor] = {}
        self.final: dict[str, torch.Tensor] = {}
        self.optimizer = None

    @hookimpl
    def framework_fit_start(self, state):
        self.calls.append(("fit_start", state.progress.step))
        self.initial = {n: p.detach().clone() for n, p in state.run.model.named_parameters()}
        self.optimizer = state.run.optimizer

    @hookimpl
    def framework_step_end(self, state, loss):
        self.calls.append(("step_end", state.progress.step))

    @hookimpl
    def framework_log(self, state, step, metrics):
        self.calls.append(("log", step, dict(metrics)))

    @hookimpl
    def framework_exception(self, state, error):
        self.calls.append(("exception", type(error).__name__))

    @hookimpl
    def framework_fit_end(self, state, result):
        self.calls.append(("fit_end", result["status"]))
        self.final = {n: p.detach().clone() for n, p in state.run.model.named_parameters()}

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def logged(self, tag: str) -> dict[int, float]:
        return {call[1]: call[2][tag] for call in self.calls if call[0] == "log"}
