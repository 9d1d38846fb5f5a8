"""Speed and memory switches: gradient checkpointing, fp16 with a gradient scaler, torch.compile with fallback,
deterministic algorithms."""

import json
import logging

import torch

import minbert.multitask.train as tr
from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.state import snapshot_folder
from tests.helpers import QUICKSTART, TINY, final_weights
from tests.test_distributed import EXACT, assert_same_weights


def test_gradient_checkpointing_gives_the_same_gradients_with_dropout():
    from minbert.model import BertModel, default_checkpoint_dir

    torch.manual_seed(0)
    model = BertModel.from_pretrained(
        default_checkpoint_dir()
    ).train()  # dropout on: recomputation must redraw the same masks
    ids = torch.randint(1000, 5000, (4, 12))
    grads = []
    for ckpt in (False, True):
        model.encoder.gradient_checkpointing = ckpt
        model.zero_grad()
        torch.manual_seed(1)
        model(ids).last_hidden_state.pow(2).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_fp16_with_gradient_scaler_trains(tmp_path, tiny_encoder):
    run = tmp_path / "fp16"  # fp16 is slow on CPU: a small random encoder keeps it to seconds
    budget = ["epochs=1", "steps_per_epoch=3", f"checkpoint={tiny_encoder}"]
    tr.train(load_config(TrainConfig, QUICKSTART, TINY + budget + ["precision=fp16", "combiner=pcgrad", f"out={run}"]))
    w = final_weights(run)
    assert all(torch.isfinite(t).all() and t.dtype == torch.float32 for t in w.values())  # fp32 master weights
    state = json.loads((snapshot_folder(run, "last") / "state.json").read_text())
    assert state["techniques"]["scaler"]["scale"] > 0  # the loss scale travels with checkpoints


def test_compile_switch_matches_eager_and_falls_back_on_a_bad_backend(tmp_path, caplog, tiny_encoder):
    exact = EXACT + [f"checkpoint={tiny_encoder}"]  # dynamo's tracing and the fallback, not the MiniLM's numbers
    tr.train(load_config(TrainConfig, QUICKSTART, exact + [f"out={tmp_path / 'eager'}"]))
    tr.train(load_config(TrainConfig, QUICKSTART, exact + ["compile=eager", f"out={tmp_path / 'compiled'}"]))
    assert_same_weights(tmp_path / "eager", tmp_path / "compiled")
    with caplog.at_level(logging.WARNING):
        tr.train(
            load_config(TrainConfig, QUICKSTART, exact + ["compile=no-such-backend", f"out={tmp_path / 'fallback'}"])
        )
    assert "unknown backend 'no-such-backend'" in caplog.text
    assert_same_weights(tmp_path / "eager", tmp_path / "fallback")


def test_freeze_word_embeddings_leaves_the_table_untouched(tmp_path):
    from minbert.model import BertModel, default_checkpoint_dir

    run = tmp_path / "frozen"
    tr.train(load_config(TrainConfig, QUICKSTART, EXACT + ["freeze_word_embeddings=true", f"out={run}"]))
    w = final_weights(run)
    start = BertModel.from_pretrained(default_checkpoint_dir()).embeddings.word_embeddings.weight
    assert torch.equal(w["bert.embeddings.word_embeddings.weight"], start)
    assert not torch.equal(
        w["bert.embeddings.position_embeddings.weight"],
        BertModel.from_pretrained(default_checkpoint_dir()).embeddings.position_embeddings.weight,
    )


def test_deterministic_switch_trains_the_same_weights_and_restores_the_global_setting(tmp_path, caplog, tiny_encoder):
    # on a CPU the kernels are deterministic already, so the switch must not change a bit; the process-wide setting
    # it turns on is put back when the run ends (the API may call train in a longer-lived process)
    exact = EXACT + [f"checkpoint={tiny_encoder}"]
    tr.train(load_config(TrainConfig, QUICKSTART, exact + [f"out={tmp_path / 'plain'}"]))
    with caplog.at_level(logging.INFO, logger="minbert"):
        tr.train(load_config(TrainConfig, QUICKSTART, exact + ["deterministic=true", f"out={tmp_path / 'det'}"]))
    assert not torch.are_deterministic_algorithms_enabled()
    assert_same_weights(tmp_path / "plain", tmp_path / "det")
    assert "device cpu, precision fp32" in caplog.text  # the log names what the run runs on
