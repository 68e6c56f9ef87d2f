"""The train stage with a distillation teacher and e5-initialised embeddings, on the tiny profile."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch

from textrnn.pretrained import embedding_for
from textrnn.stages import train
from textrnn.vocab import Vocabulary


def test_train_with_teacher_and_e5_is_repeatable_and_ships_the_rnn_alone(built, tmp_path):
    vocab_dir = Path(shutil.copytree(built.paths.vocab, tmp_path / "vocab"))
    model_p = dataclasses.replace(built.model, pretrained="e5")
    train_p = dataclasses.replace(built.train, teacher="tfidf", teacher_folds=3)
    outputs = []
    for run in ("first", "second"):
        out = tmp_path / run
        train.run(vocab_dir, out / "checkpoint.pt", out / "log.csv", out / "state.pt", model_p, train_p)
        assert (out / "state.teacher.npz").exists()  # the teacher's soft targets, cached beside the state
        outputs.append((out / "checkpoint.pt").read_bytes())
    assert outputs[0] == outputs[1]
    payload = torch.load(tmp_path / "first" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert "pretrained" not in payload["config"]  # an initialisation, not part of the exported architecture
    assert set(payload["state_dict"]) == set(torch.load(built.paths.checkpoint, weights_only=True)["state_dict"])


def test_e5_initial_embedding_covers_the_tiny_vocabulary(built):
    vocab = Vocabulary.load(Path(built.paths.vocab) / "vocab.json")
    matrix = embedding_for(vocab.tokens, "e5", built.model.embedding_dim, seed=0)
    assert matrix.shape == (len(vocab), built.model.embedding_dim)
    assert not matrix[0].any() and np.isfinite(matrix).all()


def test_ddp_processes_distil_from_the_same_teacher_as_one_process(built, tmp_path):
    train_p = dataclasses.replace(built.train, teacher="tfidf", teacher_folds=3, epochs=1, threads=1)
    caches = []
    for nproc in (1, 2):
        out = tmp_path / f"nproc{nproc}"
        train.run(Path(built.paths.vocab), out / "checkpoint.pt", out / "log.csv", out / "state.pt", built.model,
                  dataclasses.replace(train_p, nproc=nproc))
        assert (out / "checkpoint.pt").is_file()
        with np.load(out / "state.teacher.npz", allow_pickle=False) as saved:  # written by rank 0 alone
            caches.append(saved["log_probs"])
    np.testing.assert_array_equal(caches[0], caches[1])
