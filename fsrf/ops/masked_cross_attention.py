"""PLACEHOLDER — being implemented."""


def masked_cross_attention(*args, **kwargs):
    raise NotImplementedError("masked_cross_attention is being implemented")
