import pytest
import torch
import torch.nn.functional as F

from minbert.errors import MinbertError
from minbert.losses import LOSSES
from minbert.model.heads import ConcatPairHead, CosinePairHead

torch.manual_seed(0)
U, V = torch.randn(6, 8), torch.randn(6, 8)


def test_ce_bce_mse_equal_pytorch():
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    assert torch.allclose(LOSSES["ce"]()({"logits": logits}, y), torch.nn.CrossEntropyLoss()(logits, y))
    s, b = torch.randn(6), torch.randint(0, 2, (6,)).float()
    assert torch.allclose(LOSSES["bce"]()({"score": s}, b), torch.nn.BCEWithLogitsLoss()(s, b))
    r = torch.rand(6) * 5
    assert torch.allclose(LOSSES["mse"]()({"score": s}, r), torch.nn.MSELoss()(s, r))


@pytest.mark.parametrize("margin", [0.0, 0.25, -0.3])
def test_cosine_embedding_equals_pytorch(margin):
    labels = torch.tensor([0.0, 1.2, 3.0, 4.6, 2.9, 5.0])  # STS scores; similar when >= 3
    ours = LOSSES["cosine_embedding"](margin=margin, threshold=3.0)({"u": U, "v": V}, labels)
    target = torch.where(labels >= 3.0, 1.0, -1.0)
    assert torch.allclose(ours, torch.nn.CosineEmbeddingLoss(margin=margin)(U, V, target), atol=1e-6)


def test_cosine_mse_is_sentence_transformers_formula():
    labels = torch.tensor([0.0, 1.0, 2.5, 5.0, 4.0, 3.0])
    expected = ((F.cosine_similarity(U, V) - labels / 5) ** 2).mean()
    assert torch.allclose(LOSSES["cosine_mse"](label_max=5.0)({"u": U, "v": V}, labels), expected)


def test_cosine_head_is_exactly_relu_cos_times_5():
    out = CosinePairHead(8, scale=5.0)(U, V)
    assert torch.equal(out["score"], torch.relu(F.cosine_similarity(U, V, dim=-1, eps=1e-8)) * 5)
    assert (out["score"] >= 0).all() and (out["score"] <= 5).all()


def test_cosine_head_with_learnable_layer_changes_the_inputs():
    head = CosinePairHead(8, scale=5.0, extra_layers=1)
    assert sum(p.numel() for p in head.parameters()) == 8 * 8 + 8
    out = head(U, V)
    assert not torch.equal(out["u"], U)


def test_concat_head_features():
    head = ConcatPairHead(8, 1, 0.0, features=("u", "v", "|u-v|", "u*v"))
    assert head.out.in_features == 32 and head(U, V)["score"].shape == (6,)
    with pytest.raises(MinbertError, match="valid are u, v"):
        ConcatPairHead(8, 1, 0.0, features=("u", "u+v"))
