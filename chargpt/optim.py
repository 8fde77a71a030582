"""A lean AdamW: decay / no-decay groups over torch's own functional (fused) AdamW kernel.

Why not torch.optim.AdamW: constructing any torch.optim.Optimizer imports torch._dynamo
(about 800 modules, +70 MiB of resident memory on CPU, measured with torch 2.13), and its
step() wraps hooks and profiling around the kernel. This class calls the same public
functional `torch.optim.adamw.adamw` (the fused kernel on CPU and CUDA, foreach elsewhere),
so the update is AdamW exactly; tests compare it with torch.optim.AdamW step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.adamw import adamw


@dataclass
class ParamGroup:
    """Parameters sharing a weight decay, with their AdamW state."""

    params: list[torch.Tensor]
    weight_decay: float
    exp_avgs: list[torch.Tensor] = field(default_factory=list)
    exp_avg_sqs: list[torch.Tensor] = field(default_factory=list)
    steps: list[torch.Tensor] = field(default_factory=list)


class AdamW:
    """AdamW over parameter groups; the learning rate is passed to each step (the schedule's)."""

    def __init__(
        self,
        groups: list[tuple[list[torch.Tensor], float]],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.groups = [ParamGroup(list(params), wd) for params, wd in groups if params]
        self.beta1, self.beta2 = betas
        self.eps = eps
        device = self.groups[0].params[0].device
        # The fused kernel exists for CPU and CUDA; foreach covers other devices (mps).
        self.fused = device.type in ("cpu", "cuda")
        for g in self.groups:
            g.exp_avgs = [
                torch.zeros_like(p, memory_format=torch.preserve_format) for p in g.params
            ]
            g.exp_avg_sqs = [
                torch.zeros_like(p, memory_format=torch.preserve_format) for p in g.params
            ]
            # Fused kernels keep the step count on the parameters' device.
            g.steps = [
                torch.zeros((), dtype=torch.float32, device=p.device if self.fused else "cpu")
                for p in g.params
            ]

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One AdamW update of every parameter that has a gradient."""
        for g in self.groups:
            have = [i for i, p in enumerate(g.params) if p.grad is not None]
            if not have:
                continue
            every = len(have) == len(g.params)
            params, exp_avgs, exp_avg_sqs, steps = (
                xs if every else [xs[i] for i in have]
                for xs in (g.params, g.exp_avgs, g.exp_avg_sqs, g.steps)
            )
            adamw(
                params,
                [p.grad for p in params],
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                foreach=None if self.fused else True,
                fused=self.fused,
                amsgrad=False,
                beta1=self.beta1,
                beta2=self.beta2,
                lr=lr,
                weight_decay=g.weight_decay,
                eps=self.eps,
                maximize=False,
            )

    def zero_grad(self) -> None:
        """Drop the gradients (set to None, so the next backward writes rather than adds)."""
        for g in self.groups:
            for p in g.params:
                p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The moments and step counts of every group (plain tensors, weights_only-loadable)."""
        return {
            "betas": [self.beta1, self.beta2],
            "eps": self.eps,
            "groups": [
                {
                    "weight_decay": g.weight_decay,
                    "exp_avgs": [t.detach().cpu() for t in g.exp_avgs],
                    "exp_avg_sqs": [t.detach().cpu() for t in g.exp_avg_sqs],
                    "steps": [t.detach().cpu() for t in g.steps],
                }
                for g in self.groups
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy a state_dict() back into this optimizer's (same-shaped) state, in place."""
        if len(state["groups"]) != len(self.groups):
            raise ValueError(
                f"optimizer state has {len(state['groups'])} groups, "
                f"this optimizer {len(self.groups)}"
            )
        for g, saved in zip(self.groups, state["groups"]):
            for name in ("exp_avgs", "exp_avg_sqs", "steps"):
                mine, theirs = getattr(g, name), saved[name]
                if len(mine) != len(theirs) or any(
                    a.shape != b.shape for a, b in zip(mine, theirs)
                ):
                    raise ValueError(f"optimizer state {name} does not match the parameters")
                for a, b in zip(mine, theirs):
                    a.copy_(b)

    def parameters(self) -> list[torch.Tensor]:
        return [p for g in self.groups for p in g.params]
