"""Switch a whole model (backbone, classifier, detector, segmentor) to its inference form."""


def switch_to_deploy(model):
    """Call ``switch_to_deploy()`` on every submodule of ``model`` that has one.

    For SLaK this folds each branch BatchNorm into its convolution and the N x N branch into the
    (K, N) kernel, so every block runs one fused convolution with a bias. Submodules' methods must be
    idempotent; ``model``'s own method, if any, is not called (so a module may implement its method
    with this function). Call it on a model in eval mode: the merge uses the BatchNorms' running
    statistics.

    Args:
        model (nn.Module): the model, changed in place.

    Returns:
        nn.Module: ``model``.
    """
    mergeable = [
        module for module in model.modules()
        if module is not model and callable(getattr(module, 'switch_to_deploy', None))
    ]
    for module in mergeable:
        module.switch_to_deploy()
    return model
