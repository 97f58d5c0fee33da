"""DiffIR (ICCV 2023): DIRformer + CPEN + IPR diffusion."""
