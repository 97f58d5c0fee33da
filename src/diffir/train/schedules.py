"""Learning-rate schedules as pure functions of the iteration.

A pure function needs no scheduler state to resume, and makes the S2 "manual" LR rules of the official code
(phase A: lr_e = base·0.1^⌊it/60k⌋; phase B: lr_g = base·0.5^⌊(it−100k)/600k⌋) plain MultiStep schedules
with absolute milestones.  ``it`` is the 1-based iteration; like BasicSR (which steps its schedulers from the
second iteration on) the schedule is evaluated at ``it − 1`` completed steps.
"""

from __future__ import annotations

import bisect
import math

import torch

from diffir.train.config import ScheduleSection


def lr_at(section: ScheduleSection, base_lr: float, it: int) -> float:
    step = max(it - 1, 0)
    if section.type == "constant":
        return base_lr
    if section.type == "multistep":
        passed = bisect.bisect_right(sorted(section.milestones), step)
        return base_lr * section.gamma**passed
    # cyclic cosine with restarts (BasicSR CosineAnnealingRestartCyclicLR); past the end, the last cycle's floor.
    start = 0
    for period, weight, eta_min in zip(section.periods, section.restart_weights, section.eta_mins, strict=True):
        if step <= start + period:
            return eta_min + weight * 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * (step - start) / period))
        start += period
    return section.eta_mins[-1]


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
