"""fp32 CPU inference through oneDNN's linear op where MKL's fp32 GEMM is slow (model/fast/onednn.py, Runner): the copy
shares every weight with the model, leaves the model as it was, gives the same outputs to float rounding, follows
the model's weights with nothing to refresh, and keeps F.linear wherever a backward may follow."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minbert.model.fast import onednn
from minbert.model.fast.onednn import OneDNNCopy, OneDNNLinear
from minbert.multitask.runner import Runner
from tests.helpers import tiny_model

pytestmark = pytest.mark.skipif(
    not hasattr(torch.ops.mkldnn, "_linear_pointwise") or not torch.backends.mkldnn.is_available(),
    reason="this PyTorch build has no oneDNN linear op",
)
SENTENCES = [[2, 7, 9, 11, 3], [2, 5, 3], [2, 8, 8, 4, 6, 7, 1, 3], [2, 4, 3]]


def test_the_copy_shares_the_weights_and_swaps_only_its_own_linear_layers():
    model = tiny_model(pals=True)
    shared = OneDNNCopy(model, ("bert", "pals", "lora")).get()
    linears = [m for m in shared.bert.modules() if isinstance(m, OneDNNLinear)]
    assert len(linears) == 6 * len(model.bert.encoder.layer) + 1  # q, k, v, attention out, two FFN; the pooler
    assert not any(type(m) is nn.Linear for m in [*shared.bert.modules(), *shared.pals.modules()])
    assert all(type(m) is not OneDNNLinear for m in model.modules())  # the model is left as it was
    mine, theirs = dict(shared.named_parameters()), dict(model.named_parameters())
    assert mine.keys() == theirs.keys() and all(mine[k] is theirs[k] for k in mine)  # shared, not copied
    assert shared.heads is model.heads and shared.specs is model.specs


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


needs_packing = pytest.mark.skipif(
    not hasattr(torch.ops.mkldnn, "_reorder_linear_weight") or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="this PyTorch build or CPU has no oneDNN bf16 linear op",
)


@needs_packing
def test_a_packed_bf16_product_is_f_linear_s_and_falls_back_where_a_backward_follows():
    torch.manual_seed(0)
    layers = [nn.Linear(48, 80).to(torch.bfloat16) for _ in range(3)]
    fast = onednn.PackedLinear(layers[0])
    both = onednn.Packed(*layers)  # side by side, as q, k and v
    w = torch.cat([lin.weight for lin in layers])
    b = torch.cat([lin.bias for lin in layers])
    for shape in [(5, 48), (3, 7, 48), (0, 48)]:
        x = torch.randn(*shape).to(torch.bfloat16)
        with torch.inference_mode():
            # where oneDNN's bf16 kernels are native, the same kernel on the same numbers: equal bit for bit
            exact = dict(atol=0, rtol=0) if onednn.packs_bf16() else dict(atol=2e-2, rtol=2e-2)
            torch.testing.assert_close(fast(x), F.linear(x, layers[0].weight, layers[0].bias), **exact)
            torch.testing.assert_close(both(x), F.linear(x, w, b), **exact)
    x = torch.randn(4, 48).to(torch.bfloat16).requires_grad_()
    fast(x).float().sum().backward()  # with autograd: F.linear itself
    want = x.grad.clone()
    x.grad = None
    layers[0](x).float().sum().backward()
    assert torch.equal(x.grad, want)
    with torch.no_grad():
        layers[0].weight.mul_(2)
    fast.packed.pack()  # a weight change shows once repacked
    with torch.inference_mode():
        x = torch.randn(5, 48).to(torch.bfloat16)
        torch.testing.assert_close(fast(x), F.linear(x, layers[0].weight, layers[0].bias), atol=2e-2, rtol=2e-2)


@needs_packing
def test_a_packed_copy_matches_the_plain_bf16_copy_follows_the_model_and_deep_copies(monkeypatch):
    model = tiny_model(pals=True).eval()
    native = onednn.packs_bf16()
    monkeypatch.setattr(onednn, "packs_bf16", lambda: False)
    plain = Runner(model, 0, "cpu", "bf16")
    monkeypatch.setattr(onednn, "packs_bf16", lambda: True)
    fast = Runner(model, 0, "cpu", "bf16")
    assert type(plain.cast) is not onednn.PackedCopy and isinstance(fast.cast, onednn.PackedCopy)
    packed = fast.model
    assert not any(type(m) is nn.Linear for m in [*packed.bert.modules(), *packed.pals.modules()])
    assert all(a.packed_qkv is not None for a in (layer.attention.self for layer in packed.bert.encoder.layer))
    assert all(type(m) is not onednn.PackedLinear for m in model.modules())  # the model is left as it was
    assert [n for n, _ in packed.named_parameters()] == [n for n, _ in model.named_parameters()]

    def agree():
        tol = dict(atol=0, rtol=0) if native else dict(atol=2e-2, rtol=0)
        torch.testing.assert_close(fast.sentences("sst", SENTENCES), plain.sentences("sst", SENTENCES), **tol)

    agree()
    with torch.no_grad():
        for p in model.bert.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fast.cast.refresh()  # as `evaluate` does: both follow the model's new weights
    plain.cast.refresh()
    agree()
    again = copy.deepcopy(packed)  # blocked weights have no storage: the copy packs its own
    with torch.inference_mode():
        x = torch.randn(6, model.bert.config.hidden_size).to(torch.bfloat16)
        layer, twin = packed.bert.encoder.layer[0].attention.self, again.bert.encoder.layer[0].attention.self
        assert torch.equal(twin.packed_qkv(x), layer.packed_qkv(x))
