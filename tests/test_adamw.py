import copy
import math

import pytest
import torch

from minbert.optim import AdamW


def train_both(ours_kw, ref_kw, steps):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.LayerNorm(32), torch.nn.Linear(32, 3))
    ref = copy.deepcopy(net)
    o1, o2 = AdamW(net.parameters(), **ours_kw), torch.optim.AdamW(ref.parameters(), **ref_kw)
    for _ in range(steps):
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        for model, opt in ((net, o1), (ref, o2)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return max((a - b).abs().max().item() for a, b in zip(net.parameters(), ref.parameters()))


@pytest.mark.parametrize("wd", [0.0, 0.01, 0.3])
@pytest.mark.parametrize("eps", [1e-8, 1e-6])
def test_matches_torch_adamw_after_1000_steps(wd, eps):
    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=eps, weight_decay=wd)
    assert train_both(kw, kw, 1000) <= 1e-6
    assert train_both({**kw, "fused": False}, kw, 1000) <= 1e-6  # the foreach path, written out


def test_fused_and_foreach_paths_agree():
    kw = dict(lr=1e-3, eps=1e-6, weight_decay=0.01)
    torch.manual_seed(0)
    a = torch.nn.Linear(16, 8)
    b = copy.deepcopy(a)
    oa, ob = AdamW(a.parameters(), fused=True, **kw), AdamW(b.parameters(), fused=False, **kw)
    for _ in range(200):
        x = torch.randn(4, 16)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).sin().sum().backward()
            o.step()
    assert max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters())) <= 1e-6
    with pytest.raises(ValueError, match="correct_bias"):
        AdamW(a.parameters(), fused=True, correct_bias=False)


def test_first_step_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamW([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    p.grad = torch.tensor([0.5, 0.25])
    opt.step()
    # t=1: m_hat = g, v_hat = g^2, so the Adam step is lr * sign(g) (up to eps); decay lr*wd*p on old p
    expected = torch.tensor([1.0 - 0.1 * 0.5 * 1.0 - 0.1, -2.0 - 0.1 * 0.5 * -2.0 - 0.1])
    torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)


def test_without_bias_correction():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=0.0, correct_bias=False)
    p.grad = torch.tensor([2.0])
    opt.step()
    m, v = 0.1 * 2.0, 0.001 * 4.0
    assert math.isclose(p.item(), 1.0 - 0.1 * m / math.sqrt(v), rel_tol=1e-6)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 2)
    b = copy.deepcopy(a)
    oa = AdamW(a.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(8, 4)
    for _ in range(3):
        oa.zero_grad()
        a(x).square().sum().backward()
        oa.step()
    b.load_state_dict(a.state_dict())
    ob = AdamW(b.parameters(), lr=1e-2, weight_decay=0.1)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # in-process load shares tensors
    for m, o in ((a, oa), (b, ob)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()
    torch.testing.assert_close(a.weight, b.weight, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_step_on_cuda_matches_torch_adamw():
    # CUDA's fused kernel refuses a step count on the CPU: the first GPU run of minbert failed every training step
    torch.manual_seed(0)
    a = torch.nn.Linear(16, 8).cuda()
    b = copy.deepcopy(a)
    kw = dict(lr=1e-3, eps=1e-6, weight_decay=0.01)
    oa, ob = AdamW(a.parameters(), fused=True, **kw), torch.optim.AdamW(b.parameters(), **kw)
    for _ in range(100):
        x = torch.randn(4, 16, device="cuda")
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).sin().sum().backward()
            o.step()
    assert max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters())) <= 1e-6
