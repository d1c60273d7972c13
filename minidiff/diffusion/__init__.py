"""Diffusion processes: noise schedules, DDPM (and later DDIM, score matching, SDEs, guidance)."""

from .schedules import NoiseSchedule, cosine_betas, linear_betas, make_schedule

__all__ = ["NoiseSchedule", "cosine_betas", "linear_betas", "make_schedule"]
