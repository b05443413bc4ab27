"""PLACEHOLDER — being implemented."""


def orthogonality_loss(*args, **kwargs):
    raise NotImplementedError("orthogonality_loss is being implemented")
