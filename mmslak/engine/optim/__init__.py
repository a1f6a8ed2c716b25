"""Optimizer constructors for SLaK and PeLK."""
from .layer_decay_optimizer_constructor import LargeKernelLayerDecayOptimizerConstructor

__all__ = ['LargeKernelLayerDecayOptimizerConstructor']
