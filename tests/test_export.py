"""`minbert export`: each format loads in the tool it is for and computes what minbert computes - transformers'
AutoModel / AutoModelForSequenceClassification, SentenceTransformer, onnxruntime."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minbert.api import Model
from minbert.config import from_dict
from minbert.data import pad
from minbert.errors import MinbertError
from minbert.export import export
from minbert.multitask.config import TrainConfig
from minbert.multitask.run import LoadedRun, build

SENTENCES = ["a gorgeous, witty, seductive movie.", "a tedious mess", "the plot is thin but the acting is superb"]


def loaded(tasks: dict, pals: bool = False) -> LoadedRun:
    """A run's model without training: the pretrained encoder and fresh (random) heads, which is all the exported
    computation needs to be checked against."""
    torch.manual_seed(0)
    cfg = from_dict(TrainConfig, {"tasks": tasks, "pals": {"enabled": pals}}).validate()
    model, tok = build(cfg, torch.device("cpu"))
    with torch.no_grad():  # heads far from zero, so a mix-up of layers or pooling shows
        for p in model.heads.parameters():
            p.normal_(0, 0.5)
    return LoadedRun(Path("RUN"), cfg, model.eval(), tok, torch.device("cpu"), {"epoch": 2, "dev": {"overall": 0.7}})


@pytest.fixture(scope="module")
def run():
    return loaded(
        {
            "sst": {"head": "linear", "pooling": "pooler"},
            "quora": {"head": "cross", "loss": "bce"},
            "sts": {"head": "cosine", "extra_layers": 1},
        }
    )


def ours(run: LoadedRun, task: str, a: list[str], b: list[str] | None = None) -> torch.Tensor:
    return Model(run).soft(task, a if b is None else list(zip(a, b)))


def test_hf_encoder_and_tokenizer_load_in_transformers(run, tmp_path):
    transformers = pytest.importorskip("transformers")
    export(run, tmp_path / "hf", "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist()[1][: len(run.tok.encode(SENTENCES, 128)[1])] == run.tok.encode(SENTENCES, 128)[1]
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "BertModel"
    with torch.no_grad():
        want = run.model.bert(enc["input_ids"], enc["attention_mask"]).last_hidden_state
        got = hf(**enc).last_hidden_state
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-4)


def test_hf_classifier_over_the_pooler_is_plain_bert_and_predicts_what_minbert_predicts(run, tmp_path):
    transformers = pytest.importorskip("transformers")
    export(run, tmp_path / "hf", "hf")
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf" / "sst").eval()
    assert type(clf).__name__ == "BertForSequenceClassification"
    assert clf.config.id2label[4] == "positive" and clf.config.num_labels == 5
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf" / "sst")
    with torch.no_grad():
        probs = clf(**tok(SENTENCES, padding=True, return_tensors="pt")).logits.softmax(-1)
    torch.testing.assert_close(probs, ours(run, "sst", SENTENCES), atol=1e-5, rtol=1e-4)


def test_hf_mean_pooled_cross_encoder_needs_trust_remote_code_and_then_matches(run, tmp_path):
    transformers = pytest.importorskip("transformers")
    export(run, tmp_path / "hf", "hf")
    folder = tmp_path / "hf" / "quora"
    with pytest.raises(Exception):  # never a silent plain BERT classifier that pools differently
        transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert isinstance(clf, transformers.BertForSequenceClassification) and clf.config.num_labels == 2
    tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    a, b = SENTENCES, SENTENCES[::-1]
    with torch.no_grad():
        p = clf(**tok(a, b, padding=True, return_tensors="pt")).logits.softmax(-1)[:, 1]
    torch.testing.assert_close(p, ours(run, "quora", a, b), atol=1e-5, rtol=1e-4)
    assert not (tmp_path / "hf" / "sts").exists()  # a bi-encoder is not a sequence classifier


def test_sentence_transformers_gives_the_embeddings_the_cosine_head_compares(run, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    export(run, tmp_path / "st", "sentence-transformers")  # default task: the cosine-headed one
    model = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    got = model.encode(SENTENCES, convert_to_tensor=True)
    with torch.no_grad():
        want = run.model.heads["sts"].layers(Model(run).embed(SENTENCES, "sts"))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    cos = torch.nn.functional.cosine_similarity(got[:1], got[1:2]).clamp(min=0) * 5
    torch.testing.assert_close(cos, ours(run, "sts", SENTENCES[:1], SENTENCES[1:2]), atol=1e-4, rtol=1e-4)
    card = (tmp_path / "st" / "README.md").read_text()
    assert "Quora duplicates" in card and "sts" in card


def test_sentence_transformers_pooler_pooling_is_a_tanh_dense(run, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    export(run, tmp_path / "st", "sentence-transformers", task="sst")
    got = st.SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(got, Model(run).embed(SENTENCES, "sst"), atol=1e-5, rtol=1e-4)


def test_sentence_transformers_folder_is_the_one_the_library_writes(run, tmp_path):
    """Saved by sentence-transformers itself: every module named by its current path (no deprecated alias such as
    `sentence_transformers.models`, which 5.4 moved), the task's max_length kept, no working files left over."""
    st = pytest.importorskip("sentence_transformers")
    export(run, tmp_path / "st", "sentence-transformers", task="sst")
    model = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    entries = json.loads((tmp_path / "st" / "modules.json").read_text())
    for e, m in zip(entries, model, strict=True):
        path, _, name = e["type"].rpartition(".")
        assert importlib.import_module(path).__name__ == path, f"{e['type']}: a deprecated alias"
        assert getattr(importlib.import_module(path), name) is type(m)
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense"]
    assert model.max_seq_length == run.cfg.task("sst").max_length and model.similarity_fn_name == "cosine"
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["st"] and not (tmp_path / "st" / ".encoder").exists()


def test_sentence_transformers_export_is_staged_and_never_over_an_export(run, tmp_path, monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    export(run, tmp_path / "st", "sentence-transformers")
    with pytest.raises(MinbertError, match="not empty; choose a new folder for the export, or add --overwrite"):
        export(run, tmp_path / "st", "sentence-transformers")
    export(run, tmp_path / "st", "sentence-transformers", task="sst", overwrite=True)
    assert json.loads((tmp_path / "st" / "modules.json").read_text())[-1]["path"] == "2_Dense"  # sst's tanh Dense

    def fail(self, path, **kwargs):
        (Path(path) / "modules.json").write_text("half")
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(st.SentenceTransformer, "save", fail)
    before = {p: p.read_bytes() for p in (tmp_path / "st").rglob("*") if p.is_file()}
    with pytest.raises(OSError, match="No space left"):
        export(run, tmp_path / "st", "sentence-transformers", overwrite=True)
    assert {p: p.read_bytes() for p in (tmp_path / "st").rglob("*") if p.is_file()} == before
    with pytest.raises(OSError):
        export(run, tmp_path / "new", "sentence-transformers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]  # no partial folder, no new one


def test_sentence_transformers_missing_is_one_line(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    with pytest.raises(MinbertError, match="needs the sentence-transformers package: pip install sentence-trans"):
        export(run, tmp_path / "st", "sentence-transformers")
    assert not (tmp_path / "st").exists()


@pytest.mark.slow
def test_onnx_matches_pytorch_on_new_shapes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = loaded({"sst": {"head": "linear"}, "sts": {"head": "cosine"}})
    export(run, tmp_path / "onnx", "onnx", task="sts", int8=True)
    manifest = json.loads((tmp_path / "onnx" / "minbert_export.json").read_text())
    assert manifest["tasks"]["sts"]["output"] == "score" and manifest["embed"]["task"] == "sts"
    assert manifest["tasks"]["sts"]["int8"]["file"] == "sts.int8.onnx"
    a, b = run.tok.encode(SENTENCES, 64), run.tok.encode(SENTENCES[::-1], 64)

    (ia, ma), (ib, mb) = pad(a, run.tok.pad_id), pad(b, run.tok.pad_id)  # (3, T): other batch and lengths than traced
    session = ort.InferenceSession(str(tmp_path / "onnx" / "sts.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids_a": ia, "attention_mask_a": ma, "input_ids_b": ib, "attention_mask_b": mb}
    got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in feed.items()})[0])
    scores = ours(run, "sts", SENTENCES, SENTENCES[::-1])
    torch.testing.assert_close(got, scores, atol=1e-4, rtol=1e-4)
    emb = ort.InferenceSession(str(tmp_path / "onnx" / "embed.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(emb.run(None, {"input_ids": ia.numpy(), "attention_mask": ma.numpy()})[0])
    torch.testing.assert_close(got, Model(run).embed(SENTENCES, "sts"), atol=1e-4, rtol=1e-4)

    # the int8 files: ONNX Runtime's int8 models near the fp32 outputs, not equal to them
    session = ort.InferenceSession(str(tmp_path / "onnx" / "sts.int8.onnx"), providers=["CPUExecutionProvider"])
    got8 = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in feed.items()})[0])
    assert (got8 - scores).abs().max() < 0.3  # of the 0..5 scale (measured: 0.13)
    emb = ort.InferenceSession(str(tmp_path / "onnx" / "embed.int8.onnx"), providers=["CPUExecutionProvider"])
    got8 = torch.from_numpy(emb.run(None, {"input_ids": ia.numpy(), "attention_mask": ma.numpy()})[0])
    assert F.cosine_similarity(got8, Model(run).embed(SENTENCES, "sts"), dim=-1).min() > 0.95  # measured: 0.985


def test_refusals_are_one_line_errors(run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MinbertError, match="not empty; choose a new folder for the export, or add --overwrite"):
        export(run, tmp_path / "full", "hf")
    with pytest.raises(MinbertError, match="valid are hf, sentence-transformers, onnx"):
        export(run, tmp_path / "a", "tflite")
    with pytest.raises(MinbertError, match="--int8 with --format hf: only --format onnx writes int8 models"):
        export(run, tmp_path / "a", "hf", int8=True)
    with pytest.raises(MinbertError, match="sts: its cosine head reads two separately encoded"):
        export(run, tmp_path / "b", "hf", task="sts")
    with pytest.raises(MinbertError, match="PALs"):
        export(loaded({"sst": {}}, pals=True), tmp_path / "c", "sentence-transformers")


@pytest.mark.slow
def test_cli_exports_a_trained_run_that_predicts_what_the_run_predicts(tiny_run, tmp_path, caplog):
    transformers = pytest.importorskip("transformers")
    import minbert
    from minbert.cli import main

    run, _ = tiny_run
    assert main(["export", str(run), str(tmp_path / "hf"), "--format", "hf"]) == 0
    assert "quora not exported as a classifier" in caplog.text  # the quickstart's quora is a bi-encoder
    assert type(transformers.AutoModel.from_pretrained(tmp_path / "hf")).__name__ == "BertModel"
    folder = tmp_path / "hf" / "sst"
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        labels = clf(**tok(SENTENCES, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    assert labels == [p["label"] for p in minbert.load(run).predict("sst", SENTENCES)]
    assert main(["export", str(run), str(tmp_path / "hf"), "--format", "hf"]) == 2  # never over an export
