"""Safe checkpoint loading under torch >= 2.6 (placeholder; completed by the foundation issue)."""


def install_safe_checkpoint_loading():
    """Allow-list the classes mmengine checkpoints contain for ``torch.load(weights_only=True)``."""
