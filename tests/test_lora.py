"""Per-task LoRA (model/lora.py): against PEFT's LoRA on transformers' BertModel, and the fused mixed-task pass
against one pass per task."""

import dataclasses

import pytest
import torch

from minbert.errors import MinbertError
from minbert.model import BertConfig, BertModel, fast, load_weights
from minbert.model.fast import varlen
from minbert.model.lora import TARGETS, LoRA, attach, peft_pattern
from minbert.model.routing import Routing
from tests.helpers import QUIET_BERT
from tests.test_fused import assert_same_step, losses_and_grads, setup

ALL = list(TARGETS)


def _randomize(lora: torch.nn.Module, seed: int = 0) -> None:
    """B starts at zero (the delta is zero): give every B weights, so the deltas and A's gradients are not."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def adapted(bert: BertModel, lora: LoRA):
    """`bert` with one task's adapters attached, and the pass that routes every row through them."""
    routing = Routing()
    attach(bert.encoder.layer, {"task": lora}, routing)
    return lambda ids, mask: _routed(bert, routing, ids, mask)


def _routed(bert, routing, ids, mask):
    with routing.to((("task", None),)):
        return bert.encoder(bert.embeddings(ids), mask)


@pytest.mark.parametrize("targets", [["query", "value"], ALL])
def test_our_lora_is_peft_s_lora_in_outputs_and_gradients(targets, monkeypatch):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    c = dataclasses.replace(QUIET_BERT, intermediate_size=40)
    ref = transformers.BertModel(transformers.BertConfig(**c.__dict__), add_pooling_layer=True).eval()
    ours = BertModel(BertConfig(**c.__dict__)).eval()
    load_weights(ours, ref.state_dict(), "reference")
    rank, alpha = 4, 8.0
    ref = peft.get_peft_model(
        ref, peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=peft_pattern(targets))
    )
    lora = LoRA(ours.config, rank, alpha, 0.0, tuple(targets))
    _randomize(lora)
    theirs = dict(ref.named_parameters())
    with torch.no_grad():  # our adapters' weights into PEFT's, by the same module path
        for i, layer in enumerate(lora.layer):
            for t, pair in layer.items():
                path = f"base_model.model.encoder.layer.{i}.{TARGETS[t]}"
                theirs[f"{path}.lora_A.default.weight"].copy_(pair.lora_A.weight)
                theirs[f"{path}.lora_B.default.weight"].copy_(pair.lora_B.weight)
    ids = torch.randint(1, c.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    encode = adapted(ours, lora)
    monkeypatch.setattr(varlen, "MIN_PADDING", 1)  # the CPU path runs this batch flat
    for path in (None, "cpu"):  # the textbook computation and the CPU's flat one (model/fast/varlen.py)
        fast.install(ours, path)
        mine = encode(ids, mask)
        got = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()
        assert torch.allclose(mine[real], got[real], atol=1e-5), (path, (mine[real] - got[real]).abs().max())
    lora.zero_grad()
    ref.zero_grad()
    encode(ids, mask)[mask.bool()].pow(2).sum().backward()
    ref(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()].pow(2).sum().backward()
    for i, layer in enumerate(lora.layer):
        for t, pair in layer.items():
            path = f"base_model.model.encoder.layer.{i}.{TARGETS[t]}"
            for ab in ("lora_A", "lora_B"):
                mine, want = getattr(pair, ab).weight.grad, theirs[f"{path}.{ab}.default.weight"].grad
                assert torch.allclose(mine, want, atol=1e-5, rtol=1e-4), (i, t, ab)


def test_a_fresh_adapter_computes_what_the_checkpoint_does():
    torch.manual_seed(0)
    bert = BertModel(QUIET_BERT).eval()
    lora = LoRA(bert.config, 4, 8.0, 0.0, tuple(ALL))
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        plain = bert.encoder(bert.embeddings(ids), mask)
        with_lora = adapted(bert, lora)(ids, mask)
    assert torch.equal(plain, with_lora)
    assert sum(p.numel() for p in lora.parameters()) == LoRA.parameter_count(bert.config, 4, tuple(ALL))


@pytest.mark.parametrize("shared", ["false", "true"])
def test_the_fused_mixed_task_pass_equals_one_pass_per_task(shared):
    """Each token through its own task's adapter in one pass: the per-task losses and every gradient as with one
    pass per task; quora has no adapter (lora.tasks), so its tokens take the checkpoint's layers."""
    cfg, model, batches = setup(
        ["lora.enabled=true", "lora.dropout=0", f"lora.targets={ALL}", "lora.tasks=[sst,sts]", "lora.rank=4"]
        + [f"lora.train_shared={shared}"]
    )
    assert set(model.lora) == {"sst", "sts"}
    for n, lo in model.lora.items():
        _randomize(lo, seed=len(n))
    model.train()
    fused, g_fused = losses_and_grads(cfg, model, batches, fused=True)
    model.run_on(None)  # the textbook model, one padded pass per task
    sep, g_sep = losses_and_grads(cfg, model, batches, fused=False)
    assert_same_step(fused, g_fused, sep, g_sep)
    assert any(k.startswith("lora.sst.") for k in g_sep) and any(k.startswith("lora.sts.") for k in g_sep)
    assert any(k.startswith("bert.") for k in g_sep) == (shared == "true")


@pytest.mark.parametrize("fused", [True, False])
def test_checkpointed_layers_are_recomputed_with_their_own_tasks_adapters(fused):
    """Gradient checkpointing recomputes each layer in the backward, after its pass has ended - with one pass per
    task, after the other tasks' passes too: the routing of the layer's own pass comes back with it, so losses and
    gradients are those without checkpointing (dropout on: the recomputation redraws the same masks)."""
    cfg, model, batches = setup(
        ["lora.enabled=true", "lora.dropout=0.1", f"lora.targets={ALL}", "lora.tasks=[sst,sts]", "lora.rank=4"]
    )
    for n, lo in model.lora.items():
        _randomize(lo, seed=len(n))
    model.train()
    results = []
    for checkpointing in (False, True):
        model.bert.encoder.gradient_checkpointing = checkpointing
        torch.manual_seed(3)
        results += losses_and_grads(cfg, model, batches, fused=fused)
    assert_same_step(*results)


@pytest.mark.parametrize(
    "override,message",
    [
        ("lora.targets=[query,dense]", "lora.targets: ['query', 'dense'] must name one or more of query, key"),
        ("lora.tasks=[cfimdb]", "lora.tasks: cfimdb not among this config's tasks"),
        ("lora.rank=0", "lora.rank: 0 must be in [1, 4096]"),
    ],
)
def test_bad_lora_settings_are_one_line(override, message):
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig
    from tests.helpers import QUICKSTART

    with pytest.raises(MinbertError) as e:
        load_config(TrainConfig, QUICKSTART, ["lora.enabled=true", override]).validate()
    assert message in str(e.value) and "\n" not in str(e.value)


SENTENCES = ["a gorgeous, witty film", "a tedious mess that never finds its footing", "fine"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from tests.helpers import QUICKSTART, TINY, run_cli

    run = tmp_path_factory.mktemp("lora") / "run"
    args = ["lora.enabled=true", "lora.tasks=[sst,sts]", "lora.rank=4", f"lora.targets={ALL}", "lr=1e-3"]
    args += ["checkpoint_every=0"]  # epoch ends only: nothing here resumes
    run_cli(str(QUICKSTART), *TINY, *args, f"out={run}")
    return run


def test_a_lora_run_keeps_the_checkpoint_and_saves_each_task_s_adapter_and_head_apart(lora_run):
    from safetensors.torch import load_file

    from minbert.model import default_checkpoint_dir
    from tests.helpers import final_weights

    weights = final_weights(lora_run)
    pretrained = load_file(str(default_checkpoint_dir() / "model.safetensors"))
    shared = [k for k in weights if k.startswith("bert.")]
    assert shared and all(torch.equal(weights[k], pretrained[k[5:]]) for k in shared if k[5:] in pretrained)
    for task in ("sst", "sts"):
        folder = lora_run / "adapters" / task
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        assert any(v.abs().max() > 0 for k, v in tensors.items() if "lora_B" in k)  # it trained
        own = sum(f.stat().st_size for f in folder.iterdir())
        assert own * 20 < (default_checkpoint_dir() / "model.safetensors").stat().st_size
    assert not (lora_run / "adapters" / "quora").exists()  # quora has no adapter: its head is in the run


def test_peft_loads_the_exported_adapters_and_agrees_with_minbert(lora_run, tmp_path):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    import minbert
    from minbert.cli import main

    out = tmp_path / "hf"
    assert main(["export", str(lora_run), str(out), "--format", "hf"]) == 0
    model = minbert.load(lora_run)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    for task in ("sst", "sts"):
        for adapters in (out / "adapters" / task, lora_run / "adapters" / task):  # the export's and the run's own
            ref = peft.PeftModel.from_pretrained(transformers.AutoModel.from_pretrained(out), adapters).eval()
            with torch.no_grad():
                h = ref(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            mean = (h * m).sum(1) / m.sum(1)  # the quickstart's pooling: the mean of the token states
            assert torch.allclose(mean, model.embed(SENTENCES, task), atol=1e-4), task
    plain = transformers.AutoModel.from_pretrained(out).eval()  # the top folder is the shared encoder, no adapter
    with torch.no_grad():
        h = plain(**enc).last_hidden_state
    assert not torch.allclose(h[:, 0], ref(**enc).last_hidden_state[:, 0], atol=1e-4)
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(out / "sst", trust_remote_code=True).eval()
    with torch.no_grad():  # the classifier folder: sst's adapters merged into its encoder
        probs = clf(**enc).logits.softmax(-1)
    assert torch.allclose(probs, torch.tensor([p["probabilities"] for p in model.predict("sst", SENTENCES)]), atol=1e-5)


def test_a_task_added_to_a_run_trains_alone_and_leaves_the_old_tasks_predictions_byte_identical(lora_run, tmp_path):
    """`from_run`: a custom task from YAML joins the LoRA run with its own adapters and head; the run's own tasks
    keep every weight, and their dev and test prediction files are byte-identical."""
    _add_mood(lora_run, tmp_path, lora=True)


def test_a_task_added_to_a_fully_fine_tuned_run_leaves_its_encoder_as_it_was(tiny_run, tmp_path):
    """The same on a run without adapters, whose encoder trained: the new task's loss must not reach it."""
    _add_mood(tiny_run[0], tmp_path, lora=False)


def _add_mood(base, tmp_path, lora: bool):
    import json

    import yaml
    from safetensors.torch import load_file

    import minbert
    from minbert.data import DATASETS, data_dir, load_split
    from minbert.multitask.state import snapshot_folder
    from tests.helpers import final_weights, run_cli

    sst = load_split(DATASETS["sst"], "dev", data_dir())[:120]
    for split, rows in (("train", sst[:80]), ("dev", sst[80:])):
        lines = [
            json.dumps({"id": f"m{e.id}", "text": e.texts[0], "mood": "up" if e.label > 2 else "down"}) for e in rows
        ]
        (tmp_path / f"mood-{split}.jsonl").write_text("\n".join(lines) + "\n")
    config = {
        "data_dir": str(data_dir()),
        "from_run": str(base),
        "custom_tasks": {
            "mood": {
                "files": {"train": str(tmp_path / "mood-train.jsonl"), "dev": str(tmp_path / "mood-dev.jsonl")},
                "text": ["text"],
                "label": "mood",
                "labels": ["down", "up"],
            }
        },
        "tasks": {"mood": {"batch_size": 8, "max_length": 24}},
        **({"lora": {"enabled": True, "rank": 4, "targets": ALL}} if lora else {}),
        "epochs": 1,
        "steps_per_epoch": 4,
        "precision": "fp32",
        "device": "cpu",
        "checkpoint_every": 0,
        "lr": 1e-3,
    }
    (tmp_path / "add.yaml").write_text(yaml.safe_dump(config))
    new = tmp_path / "with-mood"
    run_cli(str(tmp_path / "add.yaml"), f"out={new}")
    saved = yaml.safe_load((new / "config.yaml").read_text())
    assert saved["keep_tasks"] == ["sst", "quora", "sts"] and list(saved["tasks"]) == ["sst", "quora", "sts", "mood"]
    old = sorted(p.name for p in (base / "predictions").iterdir())
    assert old and all((new / "predictions" / n).read_bytes() == (base / "predictions" / n).read_bytes() for n in old)
    assert (new / "predictions" / "mood-dev-output.csv").is_file()
    # RUN's best epoch is what the new run starts from; every weight of it stays: encoder, adapters and heads
    before, after = load_file(str(snapshot_folder(base, "best") / "model.safetensors")), final_weights(new)
    assert all(torch.equal(before[k], after[k]) for k in before)
    added = [k for k in after if k not in before]
    assert added and all(k.startswith(("heads.mood.", "lora.mood.")) for k in added)
    assert any(k.startswith("lora.mood.") for k in added) == lora
    if lora:
        assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in added if "lora_B" in k)  # trained
        assert (new / "adapters" / "mood" / "adapter_model.safetensors").is_file()
    got = minbert.load(new).predict("mood", ["a gorgeous, witty film"])[0]
    assert got["name"] in ("down", "up")
