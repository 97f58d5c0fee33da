"""diffir.diffusion"""
