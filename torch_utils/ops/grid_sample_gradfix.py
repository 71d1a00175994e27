"""Bilinear `grid_sample` whose gradient can itself be differentiated, for the R1 penalty through the geometric
augmentation of ADA (long_video_gan/augment.py).

`grid_sample(input, grid)` is `torch.nn.functional.grid_sample` with `mode="bilinear"`, `padding_mode="zeros"` and
`align_corners=False`. With the module flag `enabled` set (both training scripts set it), it runs as a custom
autograd function whose backward pass calls PyTorch's `grid_sampler_2d_backward` operator with differentiable
inputs, so a graph built with `create_graph=True` (R1: the gradient of D's output with respect to the real images,
taken through the augmentation) can be differentiated again with respect to the incoming gradient, the input and the
grid. Without the flag it calls `torch.nn.functional.grid_sample` directly.

Example:

    from torch_utils.ops import grid_sample_gradfix
    grid_sample_gradfix.enabled = True
    y = grid_sample_gradfix.grid_sample(images, grid)   # images [N, C, H, W], grid [N, Ho, Wo, 2] -> [N, C, Ho, Wo]
"""

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------

enabled = False  # Use the custom autograd function (set by the training scripts).

# Integer codes of the aten grid-sampler operators.
_BILINEAR = 0
_ZEROS = 0
_ALIGN_CORNERS = False


def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample `input [N, C, H, W]` bilinearly at `grid [N, Ho, Wo, 2]` (x, y in [-1, 1]); zeros outside.

    Returns `[N, C, Ho, Wo]`.
    """
    _check_args(input, grid)
    if _should_use_custom_op():
        return _GridSample2d.apply(input, grid)
    return F.grid_sample(input=input, grid=grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _should_use_custom_op() -> bool:
    return enabled


def _check_args(input, grid) -> None:
    for name, t in (("input", input), ("grid", grid)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if input.ndim != 4:
        raise ValueError(f"input must have 4 dimensions [N, C, H, W], got shape {list(input.shape)}")
    if grid.ndim != 4 or grid.shape[3] != 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(
            f"grid must have shape [N, Ho, Wo, 2] with N = {input.shape[0]} (from input), got {list(grid.shape)}"
        )
    if grid.dtype != input.dtype:
        raise TypeError(f"grid must have the dtype of input ({input.dtype}), got {grid.dtype}")


# ----------------------------------------------------------------------------


class _GridSample2d(torch.autograd.Function):
    """Bilinear zero-padded grid sampling; the backward uses differentiable ops, so any derivative order works.

    Not decorated with `once_differentiable`: under `create_graph=True` autograd records the backward operator
    (`grid_sampler_2d_backward`, which has its own derivative formula) on the saved, graph-connected input and grid.
    """

    @staticmethod
    def forward(ctx, input, grid):
        ctx.save_for_backward(input, grid)
        return torch.grid_sampler_2d(input, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        need_input, need_grid = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_input or need_grid):
            return None, None
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output, input, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS, [need_input, need_grid]
        )
        return (grad_input if need_input else None), (grad_grid if need_grid else None)


# ----------------------------------------------------------------------------
