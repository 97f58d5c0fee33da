"""DiffBIR (Lin et al.): a regression cleaner (SwinIR, RRDBNet/BSRNet, SCUNet), then IRControlNet on Stable
Diffusion 2.1-base, with region-adaptive restoration guidance."""
