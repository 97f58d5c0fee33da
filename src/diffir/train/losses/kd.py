"""Knowledge distillation of the IPR: CPEN_S2 + diffusion learn to reproduce the frozen CPEN_S1's IPR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KDLoss(nn.Module):
    """Returns ``(training term, logs)``.

    Official DiffIR computes both a temperature-softened KL and an L1 and trains on the L1 only; the KL is logged.
    ``type`` selects the training term among the paper's Tab. 5 candidates: ``l1`` (official, L_diff), ``l2``
    (Eq. 14) or ``kl`` (Eq. 15, with the temperature).  The teacher IPR is always detached.
    """

    def __init__(self, type: str = "l1", weight: float = 1.0, temperature: float = 0.15) -> None:
        super().__init__()
        if type not in ("l1", "l2", "kl"):
            raise ValueError(f"unknown KD loss {type!r}")
        self.type, self.weight, self.temperature = type, weight, temperature

    def kl(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        # over the last axis: the IPR (B, 256), or each prior token (B, N, C')
        return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1), reduction="batchmean")

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        student, teacher = student.float(), teacher.detach().float()
        l1 = F.l1_loss(student, teacher)
        kl = self.kl(student, teacher)
        term = {"l1": l1, "l2": F.mse_loss(student, teacher), "kl": kl}[self.type]
        return self.weight * term, {"kd_l1": l1.item(), "kd_kl": kl.item()}
