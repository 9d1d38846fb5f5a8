import torch

from minbert.model.fast.dropout import dropout, keep_mask


def test_keep_probability_and_lanes_are_uniform():
    torch.manual_seed(0)
    m = keep_mask(torch.Size([400_000, 4]), 0.1, torch.device("cpu"))
    # each of the four 16-bit lanes of a 64-bit draw keeps 1 - round(0.1 * 2^16) / 2^16 of its elements
    expected = 1 - 6554 / 65536
    for lane in m.float().mean(0):
        assert abs(lane.item() - expected) < 4 * (expected * (1 - expected) / 400_000) ** 0.5
    # neighbouring elements are independent: P(both kept) = P(kept)^2
    both = (m[:, 0] & m[:, 1]).float().mean().item()
    assert abs(both - expected**2) < 0.003


def test_dropout_scales_like_torch_and_backward_uses_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 48, 32, requires_grad=True)
    y = dropout(x, 0.1, True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.9)  # F.dropout's 1 / (1 - p) scaling
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.9)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    # same seed, same mask (so activation checkpointing recomputes it)
    torch.manual_seed(5)
    a = dropout(x.detach(), 0.3, True)
    torch.manual_seed(5)
    torch.testing.assert_close(a, dropout(x.detach(), 0.3, True))
    assert abs((a == 0).float().mean().item() - 0.3) < 0.01
