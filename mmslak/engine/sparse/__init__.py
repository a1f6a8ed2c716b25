"""Sparse training (SLaK's dynamic sparsity) and sparse fine-tuning as MMEngine hooks."""
from .sparse_finetune_hook import SparseFinetuneHook
from .sparse_training_hook import SparseTrainingHook

__all__ = ['SparseTrainingHook', 'SparseFinetuneHook']
