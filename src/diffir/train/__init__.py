"""Training: ``diffir train -c CONFIG.yaml`` (S1 → S2 → GAN) — see ``docs/training.md``.

    from diffir.train import load_config, Trainer
    trainer = Trainer(load_config("configs/tiny/sr_x4_s1.yaml"), out="runs/s1")
    trainer.fit()
"""

from __future__ import annotations

from diffir.train.config import TrainConfig
from diffir.train.loading import load_config, parse_config

__all__ = ["Trainer", "TrainConfig", "load_config", "parse_config"]


def __getattr__(name: str):
    if name == "Trainer":  # torch-heavy; imported on first use
        from diffir.train.engine import Trainer

        return Trainer
    raise AttributeError(name)
