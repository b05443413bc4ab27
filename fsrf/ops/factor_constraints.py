"""PLACEHOLDER — being implemented."""


def factor_constraints(*args, **kwargs):
    raise NotImplementedError("factor_constraints is being implemented")
