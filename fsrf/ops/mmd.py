"""PLACEHOLDER — being implemented."""


def mmd(*args, **kwargs):
    raise NotImplementedError("mmd is being implemented")
