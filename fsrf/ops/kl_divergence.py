"""PLACEHOLDER — being implemented."""


def kl_divergence(*args, **kwargs):
    raise NotImplementedError("kl_divergence is being implemented")
