"""Building blocks shared by several architectures (Restormer blocks, MLP-Mixer)."""
