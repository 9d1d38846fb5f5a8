import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from minbert.errors import MinbertError
from minbert.model import BertModel, resolve_checkpoint


def copy_ckpt(ckpt, dst):
    dst.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(ckpt / name, dst / name)
    return dst


def test_unknown_checkpoint_dir(tmp_path):
    with pytest.raises(MinbertError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(MinbertError, match="no config.json"):
        resolve_checkpoint(tmp_path)


def test_missing_tensor_is_named(ckpt, tmp_path):
    d = copy_ckpt(ckpt, tmp_path / "c")
    state = load_file(str(ckpt / "model.safetensors"))
    del state["encoder.layer.3.attention.self.key.weight"]
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(MinbertError, match=r"missing 1 tensor\(s\): encoder.layer.3.attention.self.key.weight"):
        BertModel.from_pretrained(d)


def test_shape_mismatch_is_named(ckpt, tmp_path):
    d = copy_ckpt(ckpt, tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 1000
    (d / "config.json").write_text(json.dumps(cfg))
    shutil.copy(ckpt / "model.safetensors", d)
    with pytest.raises(MinbertError, match=r"encoder.layer.0.intermediate.dense.weight \(1536, 384\) != \(1000, 384\)"):
        BertModel.from_pretrained(d)


def test_no_weights_file(ckpt, tmp_path):
    d = copy_ckpt(ckpt, tmp_path / "c")
    with pytest.raises(MinbertError, match="no model.safetensors or pytorch_model.bin"):
        BertModel.from_pretrained(d)


def test_pretraining_layout_bin_with_gamma_beta_loads(ckpt, tmp_path):
    """bert-base-uncased ships pytorch_model.bin with `bert.` prefixes, LayerNorm gamma/beta and cls.* heads."""
    d = copy_ckpt(ckpt, tmp_path / "c")
    state = load_file(str(ckpt / "model.safetensors"))
    renamed = {
        "bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    renamed["cls.predictions.bias"] = torch.zeros(30522)
    torch.save(renamed, d / "pytorch_model.bin")
    a, b = BertModel.from_pretrained(d), BertModel.from_pretrained(ckpt)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_missing_pooler_is_allowed_with_a_warning(ckpt, tmp_path, caplog):
    d = copy_ckpt(ckpt, tmp_path / "c")
    state = {k: v for k, v in load_file(str(ckpt / "model.safetensors")).items() if not k.startswith("pooler.")}
    save_file(state, str(d / "model.safetensors"))
    BertModel.from_pretrained(d)
    assert "initialised randomly: pooler.dense.weight" in caplog.text


def test_non_bert_config_is_refused(ckpt, tmp_path):
    d = copy_ckpt(ckpt, tmp_path / "c")
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(MinbertError, match="BERT checkpoints only"):
        BertModel.from_pretrained(d)
