"""The RNN classifier: embedding → (bi)LSTM/GRU layers → masked pooling → linear head, with a hashed bag
of token n-grams (orders 2..ngram_max, mean of their bucket vectors) joining the pooled RNN features
before the head: the sparse n-gram evidence a TF-IDF model reads, learnt end to end with the sequence
(`model.ngram_buckets: 0` leaves the RNN alone). The hashing is part of the graph, so the exported
model takes the same token ids as before.

Padding never changes a prediction. Sequences are right-padded; the forward direction reads the real
tokens before any pad, and the backward direction is a second unidirectional RNN that reads each row
reversed *within its own length* (pads stay at the end), so neither direction ever sees a pad before a
real token. Pooling masks the pads. This is exact like packed sequences, much faster on CPU, and exports
to ONNX with either exporter (packed sequences do not export with the dynamo exporter).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from textrnn.config import ModelParams

_MASK_FILL = -1e4  # finite: -inf turns all-masked rows into NaN


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    num_classes: int
    cell: str = "lstm"
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "maxmean"
    embedding_dropout: float = 0.1
    dropout: float = 0.3
    ngram_buckets: int = 0
    ngram_max: int = 3
    ngram_dim: int = 32

    @classmethod
    def from_params(cls, p: ModelParams, vocab_size: int, num_classes: int) -> ModelConfig:
        architecture = {k: v for k, v in asdict(p).items() if k != "pretrained"}  # an initialisation only
        return cls(vocab_size=vocab_size, num_classes=num_classes, **architecture)

    def to_dict(self) -> dict:
        return asdict(self)


_NGRAM_PRIME = 1_000_003  # < 2**20: with buckets < 2**22 the rolling hash stays far inside int64


def hashed_ngrams(ids: torch.Tensor, lengths: torch.Tensor, max_order: int, buckets: int):
    """Bucket ids of the n-grams of orders 2..max_order starting at every step, and which of them lie
    wholly inside the row's real tokens. ids: [B, T] → ([B, (max_order - 1) * T], same shape, bool).
    The ids are padded by max_order - 1 steps so every order has T starts (no empty or negative slices,
    which ONNX Runtime handles badly when T is shorter than an order)."""
    steps = ids.shape[1]
    padded = nn.functional.pad(ids, (0, max_order - 1))
    start = torch.arange(steps, device=ids.device).unsqueeze(0)  # [1, T]
    grams, masks = [], []
    for order in range(2, max_order + 1):
        h = padded[:, :steps] + order  # the order salts the hash: a bigram and a trigram never share a key
        for k in range(1, order):
            h = torch.remainder(h * _NGRAM_PRIME + padded[:, k:k + steps], buckets)
        grams.append(h)
        masks.append(start + order <= lengths.unsqueeze(1))
    return torch.cat(grams, dim=1), torch.cat(masks, dim=1)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `length` steps, leaving the pads in place. x: [B, T, D], lengths: [B]."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, T]
    lengths = lengths.unsqueeze(1)  # [B, 1]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [B, T]
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class RNNClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cfg.cell]
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(cfg.embedding_dropout)
        directions = 2 if cfg.bidirectional else 1
        self.forward_rnns = nn.ModuleList()
        self.backward_rnns = nn.ModuleList()
        for layer in range(cfg.num_layers):
            size_in = cfg.embedding_dim if layer == 0 else cfg.hidden_size * directions
            self.forward_rnns.append(rnn(size_in, cfg.hidden_size, batch_first=True))
            if cfg.bidirectional:
                self.backward_rnns.append(rnn(size_in, cfg.hidden_size, batch_first=True))
        self.dropout = nn.Dropout(cfg.dropout)
        features = cfg.hidden_size * directions
        self.attention = nn.Linear(features, 1) if cfg.pooling == "attention" else None
        pooled = features * (2 if cfg.pooling == "maxmean" else 1)
        self.ngrams = nn.Embedding(cfg.ngram_buckets, cfg.ngram_dim) if cfg.ngram_buckets else None
        if self.ngrams is not None:
            nn.init.zeros_(self.ngrams.weight)  # a random start would drown the signal: a rare bucket barely moves
        self.head = nn.Linear(pooled + (cfg.ngram_dim if self.ngrams is not None else 0), cfg.num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids: [B, T] int64 right-padded with 0; lengths: [B] int64 ≥ 1 → logits [B, C]."""
        mask = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
        x = self.embedding_dropout(self.embedding(ids))  # [B, T, E]
        for layer in range(self.cfg.num_layers):
            if layer > 0:
                x = self.dropout(x)
            x = self._run_layer(layer, x, lengths)  # [B, T, H * directions]
        pooled = self._pool(x, mask, lengths)
        if self.ngrams is not None:
            pooled = torch.cat([pooled, self._ngram_bag(ids, lengths)], dim=1)
        return self.head(self.dropout(pooled))

    def _ngram_bag(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean embedding of the row's hashed n-grams (pads excluded): the bag of n-grams that TF-IDF
        models read, beside the sequence the RNN reads. [B, ngram_dim]; zeros for a row too short."""
        grams, valid = hashed_ngrams(ids, lengths, self.cfg.ngram_max, self.cfg.ngram_buckets)
        vectors = self.embedding_dropout(self.ngrams(grams)) * valid.unsqueeze(-1)
        count = valid.sum(1, keepdim=True).clamp(min=1).to(vectors.dtype)
        return vectors.sum(1) / count

    def _run_layer(self, layer: int, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        forward_out, _ = self.forward_rnns[layer](x)
        if not self.cfg.bidirectional:
            return forward_out
        backward_out, _ = self.backward_rnns[layer](reverse_within_length(x, lengths))
        return torch.cat([forward_out, reverse_within_length(backward_out, lengths)], dim=2)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D] → [B, D] (or [B, 2D] for maxmean), pads excluded."""
        pooling = self.cfg.pooling
        mask3 = mask.unsqueeze(-1)  # [B, T, 1]
        if pooling == "last":
            return self._last(x, lengths)
        mean = (x * mask3).sum(1) / lengths.unsqueeze(1).to(x.dtype)
        if pooling == "mean":
            return mean
        if pooling == "attention":
            scores = self.attention(x).masked_fill(~mask3, _MASK_FILL)  # [B, T, 1]
            return (torch.softmax(scores, dim=1) * x).sum(1)
        maxed = x.masked_fill(~mask3, _MASK_FILL).max(dim=1).values
        return maxed if pooling == "max" else torch.cat([maxed, mean], dim=1)

    def _last(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The forward direction's state at the last real token; the backward one's at the first token."""
        h = self.cfg.hidden_size
        index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, h)
        last_forward = x[:, :, :h].gather(1, index).squeeze(1)
        if not self.cfg.bidirectional:
            return last_forward
        return torch.cat([last_forward, x[:, 0, h:]], dim=1)
