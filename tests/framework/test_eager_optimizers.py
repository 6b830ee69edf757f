"""torch.optim's optimizers step bit for bit as shipped when the command line keeps them from
importing torch._dynamo, and go back to torch's own wrappers once anything imports it.

Each side is a real process: one with ``skip_dynamo_import()``, one with torch untouched, both
running the same plain PyTorch loop (every optimizer the plugins offer, and more, with
schedulers, a state_dict round trip and grad-mode checks)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

from tests.conftest import run_cli

# Prints JSON: whether torch._dynamo was imported by the loop, and where the final tensors went.
LOOP = textwrap.dedent("""
    import json, sys
    import torch
    from framework.eager_optimizers import skip_dynamo_import

    skip, out = sys.argv[1] == "skip", sys.argv[2]
    given = skip_dynamo_import() if skip else 0

    OPTIMIZERS = [
        (torch.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3)),
        (torch.optim.SGD, dict(lr=0.01, foreach=False)),
        (torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
        (torch.optim.Adam, dict(lr=0.01, fused=True)),
        (torch.optim.AdamW, dict(lr=0.01)),
        (torch.optim.NAdam, dict(lr=0.01, foreach=True)),
        (torch.optim.RMSprop, dict(lr=0.001, momentum=0.5)),
        (torch.optim.Adagrad, dict(lr=0.1)),
        (torch.optim.Adadelta, dict(lr=0.5)),
        (torch.optim.Adamax, dict(lr=0.01)),
        (torch.optim.ASGD, dict(lr=0.01)),
        (torch.optim.RAdam, dict(lr=0.01)),
        (torch.optim.Rprop, dict(lr=0.01)),
        (torch.optim.LBFGS, dict(lr=0.5, max_iter=4)),
    ]

    def fit(optimizer_class, options, steps=30):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, generator=generator)
        y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3
        model = torch.nn.Linear(3, 1)
        with torch.no_grad():
            model.weight.copy_(torch.randn(1, 3, generator=generator))
            model.bias.zero_()
        optimizer = optimizer_class(model.parameters(), **options)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
        grad_modes = []
        optimizer.register_step_post_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        for step in range(steps - 1):
            optimizer.step(closure)
            scheduler.step()
            if step == steps // 2:  # what a checkpoint and a resume do
                saved = optimizer.state_dict()
                optimizer = optimizer_class(model.parameters(), **options)
                optimizer.load_state_dict(saved)
                scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5,
                                                            last_epoch=scheduler.last_epoch)
                optimizer.register_step_post_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
        with torch.no_grad():  # the caller's grad mode, whatever it is, is restored after a step
            optimizer.step(closure)
        assert grad_modes == [True] * (steps - 1) + [False], grad_modes
        return [p.detach().clone() for p in model.parameters()]

    def differentiable_step():
        # A differentiable optimizer steps with grad enabled: the update is part of the graph.
        weights = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        updated = weights.clone()
        optimizer = torch.optim.SGD([updated], lr=0.1, momentum=0.5, differentiable=True)
        updated.grad = weights.detach() * 2
        optimizer.step()
        (updated * updated).sum().backward()
        return [updated.detach().clone(), weights.grad.clone()]

    def compiled_fit(steps=5):
        model = torch.nn.Linear(3, 1)
        with torch.no_grad():
            model.weight.fill_(0.5)
            model.bias.zero_()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        x = torch.linspace(-1, 1, 24).reshape(8, 3)

        @torch.compile(backend="eager")
        def step():
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()

        for _ in range(steps):
            step()
        return [p.detach().clone() for p in model.parameters()]

    def every_fit():
        fits = {f"{index}:{cls.__name__}": fit(cls, options) for index, (cls, options) in enumerate(OPTIMIZERS)}
        fits["differentiable"] = differentiable_step()
        return fits

    finals = every_fit()
    dynamo_after_loop = "torch._dynamo" in sys.modules
    import torch._dynamo  # from here on, torch's own wrappers run
    after_import = every_fit()
    after_import["compiled"] = compiled_fit()
    torch.save({"finals": finals, "after_import": after_import}, out)
    print(json.dumps({"given": given, "dynamo_after_loop": dynamo_after_loop}))
""")


def run_loop(mode: str, out) -> dict:
    finished = subprocess.run([sys.executable, "-c", LOOP, mode, str(out)], capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout.strip().splitlines()[-1])


def test_optimizers_step_as_shipped_without_importing_dynamo(tmp_path):
    skipped = run_loop("skip", tmp_path / "skipped.pt")
    shipped = run_loop("shipped", tmp_path / "shipped.pt")
    # add_param_group, zero_grad, state_dict, load_state_dict, and the step of each optimizer
    # torch ships with _use_grad_for_differentiable (torch 2.13: 10 of them).
    assert skipped["given"] >= 14 and skipped["dynamo_after_loop"] is False, skipped
    assert shipped["dynamo_after_loop"] is True  # torch as shipped imports it: the test can tell
    skipped_tensors = torch.load(tmp_path / "skipped.pt")
    shipped_tensors = torch.load(tmp_path / "shipped.pt")
    for part in ("finals", "after_import"):
        assert skipped_tensors[part].keys() == shipped_tensors[part].keys()
        for name, reference in shipped_tensors[part].items():
            for got, expected in zip(skipped_tensors[part][name], reference, strict=True):
                assert torch.equal(got, expected), (part, name)


def test_a_command_line_run_never_imports_dynamo(tmp_path):
    finished = run_cli("+task=polyfit", "optimizer=adam", "trainer.max_steps=20", "trainer.checkpoint_every=10",
                       "logger=[]", cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert finished.returncode == 0, finished.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in finished.stderr.splitlines()
                if line.startswith("import time:")]
    assert "torch.optim" in imported and "torch._dynamo" not in imported
