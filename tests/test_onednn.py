"""fp32 CPU inference through oneDNN's linear op where MKL's fp32 GEMM is slow (model/onednn.py, Runner): the copy
shares every weight with the model, leaves the model as it was, gives the same outputs to float rounding, follows
the model's weights with nothing to refresh, and keeps F.linear wherever a backward may follow."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minbert.model import onednn
from minbert.model.onednn import OneDNNCopy, OneDNNLinear
from minbert.multitask.runner import Runner
from tests.helpers import tiny_model

pytestmark = pytest.mark.skipif(
    not hasattr(torch.ops.mkldnn, "_linear_pointwise") or not torch.backends.mkldnn.is_available(),
    reason="this PyTorch build has no oneDNN linear op",
)
SENTENCES = [[2, 7, 9, 11, 3], [2, 5, 3], [2, 8, 8, 4, 6, 7, 1, 3], [2, 4, 3]]


def test_the_copy_shares_the_weights_and_swaps_only_its_own_linear_layers():
    model = tiny_model(pals=True)
    copy = OneDNNCopy(model, ("bert", "pals", "lora")).get()
    linears = [m for m in copy.bert.modules() if isinstance(m, OneDNNLinear)]
    assert len(linears) == 6 * len(model.bert.encoder.layer) + 1  # q, k, v, attention out, two FFN; the pooler
    assert not any(type(m) is nn.Linear for m in [*copy.bert.modules(), *copy.pals.modules()])
    assert all(type(m) is not OneDNNLinear for m in model.modules())  # the model is left as it was
    mine, theirs = dict(copy.named_parameters()), dict(model.named_parameters())
    assert mine.keys() == theirs.keys() and all(mine[k] is theirs[k] for k in mine)  # shared, not copied
    assert copy.heads is model.heads and copy.specs is model.specs


def test_a_linear_layer_through_onednn_equals_f_linear_to_rounding_and_keeps_autograd():
    torch.manual_seed(0)
    lin = nn.Linear(48, 80)
    fast = OneDNNLinear(lin)
    for shape in [(5, 48), (3, 7, 48), (0, 48)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
    x = torch.randn(4, 48, requires_grad=True)
    fast(x).sum().backward()  # with autograd: F.linear itself, bit for bit
    want = x.grad.clone()
    x.grad = None
    lin(x).sum().backward()
    assert torch.equal(x.grad, want)


def test_an_fp32_runner_uses_the_copy_where_it_is_faster_and_agrees_with_the_model(monkeypatch):
    model = tiny_model(pals=True).eval()
    monkeypatch.setattr(onednn, "faster_here", lambda: False)
    plain = Runner(model, 0, "cpu", "fp32")
    assert plain.cast is None and plain.model is model
    monkeypatch.setattr(onednn, "faster_here", lambda: True)
    fast = Runner(model, 0, "cpu", "fp32")
    assert isinstance(fast.cast, OneDNNCopy) and fast.model is not model
    assert Runner(model, 0, "cpu", "int8").cast is None  # quantized layers are not linear layers to swap
    torch.testing.assert_close(fast.sentences("sst", SENTENCES), plain.sentences("sst", SENTENCES), atol=1e-5, rtol=0)
    with torch.no_grad():  # the copy follows the model's weights: they are the same tensors
        model.bert.encoder.layer[0].output.dense.weight.mul_(2)
    torch.testing.assert_close(fast.sentences("sst", SENTENCES), plain.sentences("sst", SENTENCES), atol=1e-5, rtol=0)
