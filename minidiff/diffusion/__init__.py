"""Diffusion processes: noise schedules, DDPM, DDIM, DPM-Solver++, score matching, SDEs and guidance, one module each."""

from .schedules import NoiseSchedule, cosine_betas, linear_betas, make_schedule

__all__ = ["NoiseSchedule", "cosine_betas", "linear_betas", "make_schedule"]
