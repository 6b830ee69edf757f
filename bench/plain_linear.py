"""The plain script that ``python -m framework +task=linear`` is compared with, as a whole process
(bench/run.py's start-up case): it imports torch, trains the same 200 SGD steps of y = 2x + 1
through 4 points from zero weights, writes the same scalars with SummaryWriter (train/loss,
train/lr, train/grad_norm and params/weight, params/bias at step 1, every 10 steps and the last),
and prints the final loss and parameters.

    python bench/plain_linear.py [--logdir runs/plain_linear]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.tensorboard import SummaryWriter

STEPS, LOG_EVERY = 200, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/plain_linear")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[3.0], [5.0], [7.0], [9.0]])
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    loss_fn = torch.nn.MSELoss()
    writer = SummaryWriter(log_dir=args.logdir)
    for step in range(1, STEPS + 1):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if step == 1 or step % LOG_EVERY == 0 or step == STEPS:
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            writer.add_scalar("train/grad_norm", grad_norm.item(), step)
            for name, parameter in model.named_parameters():
                writer.add_scalar(f"params/{name}", parameter.item(), step)
    writer.close()
    with torch.no_grad():
        final_loss = loss_fn(model(x), y).item()
    print(json.dumps({"final_loss": final_loss,
                      "params": {name: p.detach().tolist() for name, p in model.named_parameters()}}))


if __name__ == "__main__":
    main()
