"""Pure-PyTorch references of every op: readable, differentiable by autograd, used by the tests
and as the ``torch`` backend (the fallback when no compiled kernel applies)."""
