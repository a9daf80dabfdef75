"""kdlib.ops: the same softmax values and gradients as PyTorch's, whichever path it takes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlib import ops


@pytest.mark.parametrize("shape", [(7, 2), (128, 10), (5, 15), (6, 16), (9, 100), (3, 4, 10)])
def test_softmaxes_match_pytorch_in_value_and_gradient(shape):
    logits = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(shape, dtype=torch.float64)
    for ours, theirs in ((ops.log_softmax, F.log_softmax), (ops.softmax, F.softmax)):
        mine = ours(logits)
        reference = theirs(logits, dim=-1)
        assert mine.shape == reference.shape and mine.is_contiguous()
        assert torch.allclose(mine, reference, atol=1e-12)
        (grad,) = torch.autograd.grad((mine * weights).sum(), logits)
        (expected,) = torch.autograd.grad((reference * weights).sum(), logits)
        assert torch.allclose(grad, expected, atol=1e-12)
