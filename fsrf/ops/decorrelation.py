"""PLACEHOLDER — being implemented."""


def decorrelation_loss(*args, **kwargs):
    raise NotImplementedError("decorrelation_loss is being implemented")
