"""Which parameters of a model are sparse."""
PARAM_SCOPES = ('backbone', 'model', 'large_kernel')


def check_param_scope(scope):
    """Raise a ValueError naming the allowed values unless ``scope`` is one of :data:`PARAM_SCOPES`."""
    if scope not in PARAM_SCOPES:
        raise ValueError(f'params must be one of {PARAM_SCOPES}, got {scope!r}')


def select_sparse_params(model, scope='backbone', large_kernel_min_size=7):
    """The trainable weights that sparse training masks, in ``named_parameters`` order.

    Args:
        model (torch.nn.Module): the unwrapped model.
        scope (str): ``'backbone'``: every 2-D and 4-D weight (Linear, Conv) of ``model.backbone``, or of the
            whole model if it has no backbone; ``'model'``: every 2-D and 4-D weight of the model, heads
            included (the official SLaK ImageNet setting); ``'large_kernel'``: only the depthwise
            convolution kernels of the backbone (4-D, one input channel per group) whose longer spatial
            side is at least ``large_kernel_min_size``. Biases, norms and other 1-D or 3-D parameters are
            never sparse; frozen parameters are left alone.
        large_kernel_min_size (int): see ``scope='large_kernel'``. Defaults to 7.

    Returns:
        list[tuple[str, torch.nn.Parameter]]: selected names and parameters.
    """
    check_param_scope(scope)
    prefix = 'backbone.' if scope != 'model' and hasattr(model, 'backbone') else ''

    def is_sparse(name, param):
        if not name.startswith(prefix) or not param.requires_grad:
            return False
        if scope == 'large_kernel':
            return param.dim() == 4 and param.shape[1] == 1 and max(param.shape[2:]) >= large_kernel_min_size
        return param.dim() in (2, 4)

    return [(name, param) for name, param in model.named_parameters() if is_sparse(name, param)]
