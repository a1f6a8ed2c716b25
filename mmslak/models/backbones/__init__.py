"""Backbones: SLaK and PeLK."""
