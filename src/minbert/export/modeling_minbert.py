"""Copied into a `minbert export --format hf` task folder as modeling_minbert.py when the task's head reads a pooling
that transformers' BertForSequenceClassification lacks (mean or [CLS] without the tanh pooler). Loaded with
`AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)`; without trust_remote_code the
folder refuses to load rather than loading as a plain BERT classifier that pools differently and predicts otherwise.

Imports only transformers and torch: it runs where minbert is not installed.
"""

import torch
from transformers import BertConfig, BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput


class MinbertConfig(BertConfig):
    model_type = "minbert"

    def __init__(self, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        self.pooling = pooling  # "mean" over non-padding tokens, "cls" the [CLS] state, "pooler" BERT's tanh pooler


class MinbertForSequenceClassification(BertForSequenceClassification):
    """BertForSequenceClassification with minbert's pooling: dropout, one linear layer over the sentence embedding."""

    config_class = MinbertConfig

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = out.last_hidden_state  # (B, T, H)
        if self.config.pooling == "cls":
            emb = hidden[:, 0]
        elif self.config.pooling == "pooler":
            emb = out.pooler_output
        else:
            if attention_mask is None:
                attention_mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
            m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
        logits = self.classifier(self.dropout(emb))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = torch.nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=None, attentions=None)
