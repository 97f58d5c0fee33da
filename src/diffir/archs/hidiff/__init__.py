"""HI-Diff (NeurIPS 2023): a Restormer with hierarchical prior integration, prior sampled by a small diffusion."""
