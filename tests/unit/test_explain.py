"""textrnn.explain / Predictor.explain: occlusion attributions over the tiny pipeline's exported model."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textrnn.explain import unit_spans
from textrnn.explain_report import top_tokens
from textrnn.io import read_folder
from textrnn.normalisation import Normalisation
from textrnn.predict import Predictor
from textrnn.vocab import PAD, UNK, Vocabulary


@pytest.fixture(scope="module")
def predictor(built) -> Predictor:
    return Predictor(built.paths.export, threads=1)


@pytest.fixture(scope="module")
def character_texts(built, predictor) -> list[str]:
    """Test rows whose tokens are all single characters and no spaces: joining the tokens that remain
    after removing one gives a text that tokenises to exactly the other tokens."""
    texts = read_folder(Path(built.paths.clean) / "test", ["text"]).column("text").to_pylist()
    kept = [t for t, e in zip(texts, predictor.explain(texts)) if e.units and " " not in t
            and all(len(u) == 1 for u in e.units) and len(e.units) <= 64]
    assert len(kept) >= 10
    return kept[:30]


def test_removing_the_top_unit_changes_the_probability_by_its_contribution(predictor, character_texts):
    for text, explanation in zip(character_texts, predictor.explain(character_texts)):
        label = explanation.label
        c = explanation.labels.index(label)
        top = int(np.argmax(np.abs(explanation.contributions[:, c])))
        assert explanation.top(1)[label][0][0] == explanation.units[top]
        rest = "".join(explanation.units[:top] + explanation.units[top + 1:])
        without = predictor.predict([rest])[0].probabilities[label] if rest else None
        if without is None:  # a one-character text: compared with one <unk> token (documented)
            continue
        full = predictor.predict([text])[0].probabilities[label]
        assert full - without == pytest.approx(explanation.contributions[top, c], abs=1e-5)


def test_a_long_text_is_explained_in_at_most_budget_units_each_exact(predictor):
    text = "这本书太好了我很喜欢但是质量太差" * 200  # cut to the vocabulary's max_len tokens
    explanation = predictor.explain([text], budget=16)[0]
    assert 1 < len(explanation.units) <= 16
    tokens = predictor.explain([text], budget=10_000)[0].units  # one unit per token
    spans = unit_spans(len(tokens), 16)
    assert explanation.units == ["".join(tokens[a:b]) for a, b in spans]
    label = explanation.label
    c = explanation.labels.index(label)
    a, b = spans[3]
    rest = "".join(tokens[:a] + tokens[b:])
    full, without = (p.probabilities[label] for p in predictor.predict(["".join(tokens), rest]))
    change = full - without
    assert change == pytest.approx(explanation.contributions[3, c], abs=1e-5)


def test_explaining_costs_a_fixed_number_of_model_calls_per_text(predictor, character_texts):
    before = predictor.model_calls
    predictor.explain(character_texts, budget=64, batch_rows=256)
    assert predictor.model_calls - before <= len(character_texts)
    long = "好书" * 500  # max_len (200) tokens after truncation: 50 units of 4 tokens, + the whole text
    rows = len(predictor.explain([long], budget=64)[0].units) + 1
    assert rows == len(unit_spans(predictor.vocab.max_len, 64)) + 1
    for batch_rows, calls in ((256, 1), (rows, 1), (16, math.ceil(rows / 16))):
        before = predictor.model_calls
        predictor.explain([long], budget=64, batch_rows=batch_rows)
        assert predictor.model_calls - before == calls


def test_explanations_agree_with_predictions_and_empty_texts_get_a_reason(predictor, character_texts):
    texts = [*character_texts[:5], "", "   ", None]
    explanations = predictor.explain(texts)
    for explanation, prediction in zip(explanations, predictor.predict(texts)):
        assert explanation.label == prediction.label and explanation.reason == prediction.reason
        if prediction.probabilities:
            assert explanation.probabilities == pytest.approx(prediction.probabilities, abs=1e-5)
    assert [e.reason for e in explanations[-3:]] == ["empty"] * 3 and explanations[-1].top() == {}
    top = explanations[0].top(3)
    assert set(top) == set(predictor.labels) and all(len(v) == min(3, len(explanations[0].units)) for v in top.values())
    # Two classes: what pushes towards one pushes away from the other by the same amount.
    np.testing.assert_allclose(explanations[0].contributions.sum(axis=1), 0, atol=1e-9)


def test_unit_spans_cover_the_tokens_in_order_within_the_budget():
    for length in range(1, 300, 7):
        for budget in (1, 5, 64):
            spans = unit_spans(length, budget)
            assert len(spans) <= budget and spans[0, 0] == 0 and spans[-1, 1] == length
            assert (spans[1:, 0] == spans[:-1, 1]).all() and (spans[:, 1] > spans[:, 0]).all()


def test_predict_cli_writes_an_explain_column(built, predictor, tmp_path, character_texts):
    texts = character_texts[:3]
    out = tmp_path / "out.jsonl"
    subprocess.run([str(Path(sys.executable).with_name("textrnn")), "predict", "--model", built.paths.export,
                    "--explain", "2", "--output", str(out), *texts, ""], check=True, capture_output=True, timeout=120)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["explain"] for row in rows[:3]] == [
        json.dumps(e.top(2), ensure_ascii=False) for e in predictor.explain(texts)]
    assert rows[3]["explain"] == "" and rows[3]["reason"] == "empty"
    assert all(len(json.loads(row["explain"])[row["label"]]) == 2 for row in rows[:3])


def test_top_tokens_are_the_largest_mean_contributions_of_tokens_seen_often_enough():
    vocab = Vocabulary(tokens=(PAD, UNK, "好", "差", "书"), normalisation=Normalisation(), jieba=False, max_len=10)
    ids = np.array([2, 2, 3, 3, 3, 4, 1, 1, 1])
    contributions = np.array([[-0.1, 0.1], [-0.3, 0.3], [0.2, -0.2], [0.4, -0.4], [0.0, 0.0], [0.9, -0.9],
                              [0.5, -0.5], [0.5, -0.5], [0.5, -0.5]])
    rows = top_tokens(ids, contributions, vocab, ["neg", "pos"], min_count=2, k=5)
    # 书 is seen once, <unk> never counts: neg ranks 差 (mean 0.2) over 好 (-0.2); pos the other way.
    assert [(r["class"], r["token"], r["mean_contribution"], r["count"]) for r in rows] == [
        ("neg", "差", 0.2, 3), ("neg", "好", -0.2, 2), ("pos", "好", 0.2, 2), ("pos", "差", -0.2, 3)]


MISLED_BY = re.compile(r'("(?:[^"\\]|\\.)*") ([+-][0-9.]+)')  # '"token" +0.123', tokens JSON-quoted


def test_the_evaluation_report_lists_top_tokens_per_class_and_what_misled_the_model(built):
    folder = Path(built.paths.evaluation)
    report = (folder / "report.md").read_text(encoding="utf-8")
    assert "## Tokens that push towards each class (test, occlusion)" in report
    assert "## What misled the model (most confident mistakes)" in report
    with open(folder / "top_tokens.csv", encoding="utf-8") as handle:
        tokens = list(csv.DictReader(handle))
    labels = json.loads((Path(built.paths.export) / "labels.json").read_text())
    assert {row["class"] for row in tokens} == set(labels)
    for label in labels:
        means = [float(r["mean_contribution"]) for r in tokens if r["class"] == label]
        assert means == sorted(means, reverse=True) and all(int(r["count"]) >= 3 for r in tokens)
    with open(folder / "mistake_tokens.csv", encoding="utf-8") as handle:
        mistakes = list(csv.DictReader(handle))
    with open(folder / "mistakes.csv", encoding="utf-8") as handle:
        assert [m["text"] for m in mistakes] == [m["text"] for m in csv.DictReader(handle)]
    for row in mistakes:  # every token named pushed towards the wrong prediction
        named = MISLED_BY.findall(row["misled_by"])
        assert ", ".join(f"{token} {value}" for token, value in named) == row["misled_by"]  # nothing else in it
        assert all(json.loads(token) and float(value) > 0 for token, value in named)
