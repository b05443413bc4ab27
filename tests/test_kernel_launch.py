"""How the Triton kernels are launched, checked where a CPU can show it: every launcher runs its
kernels on the inputs' device (a bare Triton launch uses the *current* CUDA device), and the
backward Gram kernels put the row tiles, the one axis that grows with N, on grid axis 0 (CUDA caps
axes 1 and 2 at 65535). The GPU runs of the same launchers, on a second device too, are in
test_triton_gpu.py."""

import pytest
import torch

import fsrf
from fsrf.kernels import _gram, _launch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_on_device_selects_a_cuda_device_and_nothing_on_cpu():
    guard = _launch.on_device(torch.device("cuda", 1))
    # constructing the guard touches no GPU; entering it makes cuda:1 current
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(_launch.on_device(torch.zeros(2)), torch.cuda.device)
    assert not isinstance(_launch.on_device(torch.device("cpu")), torch.cuda.device)


@pytest.fixture
def guard_calls(monkeypatch):
    """The devices every launcher entered ``_launch.on_device`` with."""
    seen = []
    orig = _launch.on_device

    def spy(device):
        seen.append(device.device if isinstance(device, torch.Tensor) else torch.device(device))
        return orig(device)

    monkeypatch.setattr(_launch, "on_device", spy)
    return seen


# (op, launcher calls in the forward, in the backward): the KL kernel writes its gradient in the
# forward, the others have a backward launcher
LAUNCHERS = [("mmd", 1, 1), ("mmd_masked", 1, 1), ("kl_divergence", 1, 0), ("factor_constraints", 1, 1)]


@pytest.mark.parametrize("op,n_fwd,n_bwd", LAUNCHERS)
def test_every_launcher_runs_under_the_inputs_device(op, n_fwd, n_bwd, guard_calls):
    x = torch.randn(9, 6, requires_grad=True)
    y = torch.randn(7, 6, requires_grad=True)
    if op == "mmd":
        loss = fsrf.ops.mmd(x, y, backend="triton")
    elif op == "mmd_masked":
        loss = fsrf.ops.mmd(x, y, x_mask=torch.rand(9) > 0.3, backend="triton")
    elif op == "kl_divergence":
        loss = fsrf.ops.kl_divergence(x, x.detach() + 1, symmetric=True, backend="triton")
    else:
        loss = fsrf.ops.factor_constraints([x, x * 2 + 1], [(0, 1)], [0], backend="triton").sum()
    assert len(guard_calls) == n_fwd
    loss.backward()
    assert len(guard_calls) == n_fwd + n_bwd
    assert all(d == x.device for d in guard_calls)


def test_backward_row_tiles_are_on_grid_axis_0():
    # on a GPU the backward uses 64-row tiles: axis 1 would stop at 65535 × 64 = 4,194,240 rows
    n = 5_000_000
    blocks = _gram._blocks(n, 128, torch.device("cuda"))
    assert blocks.bn_bwd == 64
    grid_bwd, grid_reduce = _gram.backward_grids(n, 30, 9, 128, blocks)
    assert grid_bwd[0] == grid_reduce[0] == -(-n // 64) > _gram.MAX_GRID_YZ
    assert all(g <= _gram.MAX_GRID_YZ for g in grid_bwd[1:] + grid_reduce[1:])
    # the forward's axes do not grow with N (split blocks are capped, tile pairs depend on d)
    plan = _gram._plan_cached((128,) * 9, tuple(_gram.term_list([(0, 1), (3, 4)], [0, 3])), n,
                              torch.device("cpu"), blocks, None)
    assert plan.tiles <= _gram.MAX_GRID_YZ


def test_backward_grids_match_what_the_backward_launches(monkeypatch):
    # the helper is what the launcher uses: a forced 16-row tile and 40 rows give 3 row tiles
    monkeypatch.setattr(_gram, "_BLOCK_OVERRIDE", (16, 16))
    grids = []
    orig = _gram.backward_grids

    def spy(*args):
        out = orig(*args)
        grids.append(out)
        return out

    monkeypatch.setattr(_gram, "backward_grids", spy)
    fs = [torch.randn(40, 5, requires_grad=True) for _ in range(3)]
    fsrf.ops.factor_constraints(fs, [(0, 1), (1, 2)], [2], backend="triton").sum().backward()
    assert grids == [((3, 5), (3, 3, 1))]  # sides: 2 per pair + 1 decorrelation; factors: 3


def test_mmd_forward_refuses_a_grid_axis_beyond_the_cuda_limit():
    from fsrf.kernels.mmd import _check_grid

    _check_grid(65535, 65535 * 64)
    with pytest.raises(ValueError, match="more than the 65535 a CUDA grid axis holds"):
        _check_grid(65536, 65536 * 64)
