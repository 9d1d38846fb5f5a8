"""The fused multitask forward (all tasks' sentences in one unpadded encoder pass) against one pass per task."""

import dataclasses
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minbert.config import load_config
from minbert.model import fast
from minbert.model.fast import varlen
from minbert.model.fast.varlen import buckets, layout, split_heads, to_grid
from minbert.model.multitask import flatten
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.objective import Objective
from minbert.multitask.run import build, load_data
from tests.helpers import QUICKSTART, QUIET_BERT, TINY


def setup(overrides):
    cfg = load_config(TrainConfig, QUICKSTART, TINY + ["encoder_dropout=0"] + overrides).validate()
    cfg = dataclasses.replace(cfg, tasks={n: dataclasses.replace(t, dropout=0.0) for n, t in cfg.tasks.items()})
    torch.manual_seed(0)
    model, tok = build(cfg, torch.device("cpu"))
    data = load_data(cfg, tok, splits=("train",))["train"]
    streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, cfg.seed) for n, d in data.items()}
    ((batches, _),) = step_batches(data, {n: s.next() for n, s in streams.items()}, tok.pad_id, "cpu")
    return cfg, model, batches


def losses_and_grads(cfg, model, batches, fused):
    objective = Objective(dataclasses.replace(cfg, fused=fused), model, torch.device("cpu"))
    model.zero_grad(set_to_none=True)
    _, losses, _ = objective(batches, {n: 1.0 for n in batches})
    sum(losses.values()).backward()
    return {n: v.item() for n, v in losses.items()}, {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def assert_same_step(a, g_a, b, g_b):
    """Two ways of computing one step: the same per-task losses and every gradient, to 1e-5 in fp32."""
    for n in b:
        assert abs(a[n] - b[n]) <= 1e-5, (n, a[n], b[n])
    assert g_a.keys() == g_b.keys()
    for n, g in g_b.items():
        assert (g_a[n] - g).abs().max() <= 1e-5 * max(1.0, g.abs().max().item()), n


@pytest.mark.parametrize(
    "heads",
    [
        [],  # quickstart: SST linear, Quora concat bi-encoder, STS cosine bi-encoder; mean pooling
        ["tasks.quora.head=cross", "tasks.sst.pooling=pooler", "tasks.sts.pooling=cls"],
    ],
)
def test_fused_step_has_the_per_task_loss_and_gradient_in_fp32(heads):
    cfg, model, batches = setup(heads)
    model.train()
    fused, g_fused = losses_and_grads(cfg, model, batches, fused=True)
    model.run_on(None)  # the per-task passes of the textbook model: the fused pass against the padded math
    sep, g_sep = losses_and_grads(cfg, model, batches, fused=False)
    assert fused.keys() == sep.keys() == {"sst", "quora", "sts"}
    assert_same_step(fused, g_fused, sep, g_sep)


def test_flat_layout_places_every_token_once_without_padding():
    _, _, batches = setup([f"tasks.{t}.max_length=128" for t in ("sst", "quora", "sts")])
    f = flatten(batches)
    real = sum(int(b.mask.sum()) for b in batches.values())
    assert f.ids.shape == (real,) and f.types is None
    v = f.layout
    # sentences in flat order, longest first; each one's tokens are the batch row's real tokens, positions restart
    rows = [r[m.bool()] for b in batches.values() for r, m in zip(b.ids, b.mask)]  # task by task
    for i, r in enumerate(rows):
        j = int(f.rank[i])
        start, n = int(v.starts[j]), int(v.lengths[j])
        assert f.ids[start : start + n].tolist() == r.tolist()
        assert v.positions[start : start + n].tolist() == list(range(n))
        assert (v.segment[start : start + n] == j).all()
    assert v.lengths.tolist() == sorted(v.lengths.tolist(), reverse=True)
    assert sum(v.sizes) == real and len(v.sizes) == len(v.grids) > 1
    # attention grids: each bucket's (B, T) grid holds its sentences' tokens row by row, left-aligned
    begin = 0
    for size, (B, T), keep, mask, fill in zip(v.sizes, v.grids, v.keep, v.mask, v.fill):
        n = v.lengths[begin : begin + B]
        assert T == int(n[0]) and int(n.sum()) == size
        assert (keep is None) == (fill is None)
        if keep is not None:
            rows, cols = keep // T, keep % T
            assert rows.tolist() == [r for r, k in enumerate(n.tolist()) for _ in range(k)]
            assert cols.tolist() == [c for k in n.tolist() for c in range(k)]
            assert mask.reshape(B, T).reshape(-1).nonzero().squeeze(1).tolist() == keep.tolist()
            # the gather index: real token i at its slot keep[i], the zero row (index size) at every other slot
            assert fill[keep].tolist() == list(range(size)) and int((fill == size).sum()) == B * T - size
        begin += B
    assert B * T <= 1.5 * size  # the last bucket too: padding within a bucket stays small


def test_buckets_minimize_padded_attention_plus_a_cost_per_bucket():
    # lengths 10, 9, 3, 3: one bucket costs 4*100 + c; cutting after 9 costs 2*100 + 2*9 + 2c
    assert buckets([10, 9, 3, 3], cost=100) == [2, 4]  # 400+100 > 218+200
    assert buckets([10, 9, 3, 3], cost=300) == [4]  # 700 < 818
    assert buckets([5, 5, 5], cost=0) == [3]  # equal lengths: one bucket, nothing to gain by cutting
    v = layout([10, 9, 3, 3], "cpu", cost=100)
    assert v.grids == [(2, 10), (2, 3)] and v.keep[1] is None and v.mask[1] is None and v.sizes == [19, 6]
    assert v.keep[0].tolist() == list(range(10)) + list(range(10, 19))  # row 2's last slot (19) is padding


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grids_are_the_scatter_and_permute_they_replace_bit_for_bit(dtype):
    # to_grid (with no backward to follow a gather from the rows plus one zero row) against zeros + index_copy,
    # split_heads (one contiguous copy) against the permuted views: the same values and gradients, exactly
    torch.manual_seed(0)
    v = layout([6, 5, 5, 2], "cpu", cost=1000.0)  # one (4, 6) bucket: 18 real tokens, slot n = 18 is the zero row
    keep, fill, (B, T) = v.keep[0], v.fill[0], v.grids[0]
    assert fill.tolist() == [*range(6), *range(6, 11), 18, *range(11, 16), 18, 16, 17, 18, 18, 18, 18]
    rows = torch.randn(len(keep), 12, dtype=dtype, requires_grad=True)
    g = torch.randn(B * T, 12, dtype=dtype)
    ref = rows.new_zeros(B * T, 12).index_copy(0, keep, rows)
    (ref * g).sum().backward()
    ref_grad, rows.grad = rows.grad, None
    ours = to_grid(rows, keep, B * T, fill)  # a backward follows: zeros + index_copy
    (ours * g).sum().backward()
    assert torch.equal(ours, ref) and torch.equal(rows.grad, ref_grad)
    with torch.no_grad():  # none follows: the gather from the rows plus a zero row, the index given or made there
        assert torch.equal(to_grid(rows, keep, B * T, fill), ref) and torch.equal(to_grid(rows, keep, B * T), ref)
    qkv = torch.randn(B, T, 12, dtype=dtype)  # 2 heads of size 2
    for a, b in zip(split_heads(qkv, 2), qkv.view(B, T, 3, 2, 2).permute(2, 0, 3, 1, 4).unbind(0)):
        assert a.is_contiguous() and torch.equal(a, b)


@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=60).map(lambda n: sorted(n, reverse=True)),
    cost=st.sampled_from([0.0, 50.0, 3000.0, 1e6]),
)
@settings(max_examples=60)
def test_every_bucket_grid_is_the_scatter_of_its_tokens(lengths, cost):
    # any layout: each padded bucket's gather index puts its real tokens where index_copy put them, zeros elsewhere
    v = layout(lengths, "cpu", cost)
    for part, (B, T), keep, fill in zip(torch.arange(sum(lengths)).split(v.sizes), v.grids, v.keep, v.fill):
        rows = part.double()[:, None].expand(-1, 2)  # (n, 2): distinct row values
        grid = rows.view(B, T, 2) if keep is None else to_grid(rows, keep, B * T, fill).view(B, T, 2)  # the gather
        ref = rows.new_zeros(B * T, 2).index_copy(0, keep, rows) if keep is not None else rows
        assert torch.equal(grid.reshape(B * T, 2), ref)


def test_fused_forward_without_grad_matches_per_task_outputs():
    # no grad takes the other attention branch (SDPA on each bucket instead of the written-out math)
    cfg, model, batches = setup(["tasks.quora.head=cross"])
    model.eval()
    with torch.no_grad():
        fused = model.fused(batches)
        for name, b in batches.items():
            sep = model.task_output(name, b)
            for f in dataclasses.fields(sep):
                v = getattr(sep, f.name)
                if v is not None:
                    assert torch.allclose(getattr(fused[name], f.name), v, atol=1e-5), (name, f.name)


@pytest.mark.parametrize("grad", [True, False], ids=["training-math", "sdpa"])
def test_flat_encoding_gives_each_sentence_its_own_states(grad):
    # lengths 7, 7, 5, 3, 3. Cost 50: (7, 7, 5 padded to 7) + (3, 3) = 3*49 + 2*9 + 2*50 = 265 beats
    # (7, 7) + (5, 3, 3) = 273 and one bucket = 295; cost 0: three unpadded buckets; cost 1000: one padded bucket
    from minbert.model import BertModel

    torch.manual_seed(0)
    c = QUIET_BERT
    bert = fast.install(BertModel(c).train(), "cpu")
    lengths = [7, 7, 5, 3, 3]
    sents = [torch.randint(1, 50, (n,)) for n in lengths]
    for cost, cuts in ((50, [3, 5]), (0, [2, 3, 5]), (1000, [5])):
        assert buckets(lengths, cost) == cuts
        v = layout(lengths, "cpu", cost)
        with torch.set_grad_enabled(grad):
            flat = bert.encoder(bert.embeddings(torch.cat(sents), None, v.positions), v)  # (N, H)
            alone = [bert.encoder(bert.embeddings(s[None]))[0] for s in sents]  # (n, H) each
        assert torch.allclose(flat, torch.cat(alone), atol=1e-5)


def test_buckets_match_an_exhaustive_split_search():
    # the plain O(S^2) dynamic program over every possible cut, against which the run-start shortcut is checked
    def total(lengths, ends, cost):
        starts = [0, *ends[:-1]]
        return sum((e - s) * lengths[s] ** 2 + cost for s, e in zip(starts, ends))

    def exhaustive(lengths, cost):
        best = [0.0] + [float("inf")] * len(lengths)
        for j in range(1, len(lengths) + 1):
            best[j] = min(best[i] + (j - i) * lengths[i] ** 2 + cost for i in range(j))
        return best[-1]

    rng = random.Random(0)
    for _ in range(200):
        lengths = sorted((rng.randint(3, 60) for _ in range(rng.randint(1, 120))), reverse=True)
        cost = rng.choice([0, 50, 1000, 3000, 30000])
        ends = buckets(lengths, cost)
        assert ends[-1] == len(lengths) and ends == sorted(set(ends))
        assert total(lengths, ends, cost) == pytest.approx(exhaustive(lengths, cost))


def test_per_task_passes_run_unpadded_with_pals_and_checkpointing(monkeypatch):
    # per-task passes (PCGrad's, PALs') lay each padded batch out flat: PALs' adapter attention and activation
    # checkpointing then see the flat layout; losses and gradients must equal the padded computation's
    monkeypatch.setattr(varlen, "MIN_PADDING", 1)  # the tiny batches carry little padding
    cfg, model, batches = setup(
        ["pals.enabled=true", "grad_checkpointing=true"]
        + [f"tasks.{t}.max_length=128" for t in ("sst", "quora", "sts")]
    )
    assert sum(varlen.unpad(b.mask) is not None for b in batches.values()) >= 2
    torch.manual_seed(1)
    for pal in model.pals.values():  # V^D starts at zero; make the adapters' attention count
        torch.nn.init.normal_(pal.decoder.weight, std=0.05)
    model.train()
    flat, g_flat = losses_and_grads(cfg, model, batches, fused=False)
    monkeypatch.setattr(varlen, "MIN_PADDING", 10**9)  # the same passes, padded
    padded, g_padded = losses_and_grads(cfg, model, batches, fused=False)
    assert any("pals" in n for n in g_flat)
    assert_same_step(flat, g_flat, padded, g_padded)


@pytest.mark.parametrize("backend", ["cpu", "cuda"])  # "cuda": the classes a CUDA device gets, run on the CPU
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_jagged_layout_gives_each_sentence_its_own_states_and_gradients(backend, grad):
    # the jagged layout (for CUDA, issue 44): attention over the whole flat run as nested-jagged tensors, no buckets
    from minbert.model import BertModel

    torch.manual_seed(0)
    bert = fast.install(BertModel(QUIET_BERT).train(), backend)
    lengths = [7, 7, 5, 3, 1]
    sents = [torch.randint(1, 50, (n,)) for n in lengths]
    v = layout(lengths, "cpu", jagged=True)
    assert v.sizes == [] and v.offsets.tolist() == [0, 7, 14, 19, 22, 23] and (v.max_len, v.min_len) == (7, 1)
    with torch.set_grad_enabled(grad):
        flat = bert.encoder(bert.embeddings(torch.cat(sents), None, v.positions), v)  # (N, H)
    weights = torch.randn_like(flat)
    if grad:
        (flat * weights).sum().backward()
        g_flat = {n: p.grad.clone() for n, p in bert.named_parameters() if p.grad is not None}
        bert.zero_grad(set_to_none=True)
    fast.install(bert, None)  # the textbook model, one sentence at a time
    with torch.set_grad_enabled(grad):
        alone = torch.cat([bert.encoder(bert.embeddings(s[None]))[0] for s in sents])  # (N, H)
    assert torch.allclose(flat, alone, atol=1e-5)
    if grad:
        (alone * weights).sum().backward()
        for n, p in bert.named_parameters():
            if p.grad is not None:  # to 1e-5 of the gradient's scale (token types: summed over all 23 tokens)
                assert (g_flat[n] - p.grad).abs().max() <= 1e-5 * max(1.0, p.grad.abs().max().item()), n


@pytest.mark.parametrize("heads", [[], ["tasks.quora.head=cross", "tasks.sst.pooling=pooler"]])
def test_fused_step_on_the_jagged_layout_has_the_per_task_loss_and_gradient(monkeypatch, heads):
    import functools

    import minbert.model.multitask as multitask

    cfg, model, batches = setup(heads)
    model.train()
    monkeypatch.setattr(multitask.varlen, "layout", functools.partial(layout, jagged=True))
    fused, g_fused = losses_and_grads(cfg, model, batches, fused=True)
    monkeypatch.undo()
    model.run_on(None)
    sep, g_sep = losses_and_grads(cfg, model, batches, fused=False)
    assert_same_step(fused, g_fused, sep, g_sep)


@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8).map(lambda n: sorted(n, reverse=True)))
@settings(max_examples=25, deadline=None)
def test_any_jagged_layout_attends_within_each_sentence(lengths):
    # the jagged attention on random values equals plain attention sentence by sentence, for any lengths
    g = torch.Generator().manual_seed(len(lengths))
    v = layout(lengths, "cpu", jagged=True)
    qkv = torch.randn(sum(lengths), 3 * 8, generator=g)  # (N, 3H), 2 heads of 4
    out = varlen.jagged_attention(qkv, v, n_head=2, dropout_p=0.0)
    for s, e in zip(v.offsets[:-1].tolist(), v.offsets[1:].tolist()):
        q, k, val = split_heads(qkv[s:e][None], 2)  # (1, 2, n, 4) each
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, val)[0].transpose(0, 1).reshape(e - s, 8)
        assert torch.allclose(out[s:e], ref, atol=1e-6)


@pytest.mark.parametrize("heads", [[], ["tasks.quora.head=cross"]])
def test_flatten_reads_the_host_copy_never_the_device(heads):
    # a batch moved to a device keeps the CPU batch it came from, and the flat layout is built from that: on the
    # meta device (no values at all, a stand-in for a GPU whose values the host would have to wait for) the same
    # layout comes out, its tensors on the device
    cfg, model, batches = setup(heads)
    on_cpu = flatten(batches, tokens=True)
    moved = {n: b.to("meta") for n, b in batches.items()}
    assert all(b.host is (batches[n].host or batches[n]) for n, b in moved.items())
    on_meta = flatten(moved, tokens=True)
    assert on_meta.ids.device.type == "meta" and on_meta.layout.segment.device.type == "meta"
    assert on_meta.spans == on_cpu.spans and on_meta.layout.sizes == on_cpu.layout.sizes
    assert on_meta.layout.grids == on_cpu.layout.grids and on_meta.ids.shape == on_cpu.ids.shape
    with pytest.raises(NotImplementedError):  # what reading the device's values would do, without the host copy
        flatten({n: dataclasses.replace(b, host=None) for n, b in moved.items()})
