"""Do the sentiment words carry the prediction? On test rows holding 爱 or 喜欢 (and no negation), the
share whose word pushes towards `pos`, and for 恨 or 厌恶 towards `neg` (issue target: >= 90%).

A word's contribution is its occlusion (textrnn.explain): p(class | text) - p(class | text without the
word's first occurrence); a word of two characters is removed whole.

    .venv/bin/python bench/explain_words.py [--model models/export] [--texts data/clean/test]
"""

from __future__ import annotations

import argparse

from textrnn.io import read_folder
from textrnn.predict import Predictor

WORDS = {"pos": ("爱", "喜欢"), "neg": ("恨", "厌恶")}
NEGATIONS = ("不", "没", "别", "无", "非", "未", "莫", "勿")


def word_rows(texts: list[str], words: tuple[str, ...]) -> list[tuple[str, str]]:
    """(text, word) for each text holding one of the words and no negation."""
    rows = []
    for text in texts:
        word = next((w for w in words if w in text), None)
        if word and not any(n in text for n in NEGATIONS):
            rows.append((text, word))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/export")
    parser.add_argument("--texts", default="data/clean/test")
    args = parser.parse_args()
    texts = [t for t in read_folder(args.texts, ["text"]).column("text").to_pylist() if t]
    predictor = Predictor(args.model)
    for label, words in WORDS.items():
        rows = word_rows(texts, words)
        if not rows:
            print(f"{label}: no row holds {'/'.join(words)} without a negation")
            continue
        full = predictor.predict([text for text, _ in rows])
        without = predictor.predict([text.replace(word, "", 1) for text, word in rows])
        changes = [f.probabilities[label] - w.probabilities.get(label, 0.0) for f, w in zip(full, without)]
        share = sum(change > 0 for change in changes) / len(changes)
        print(f"{label}: {'/'.join(words)} pushes towards {label} in {share:.1%} of {len(rows)} rows "
              f"(mean change {sum(changes) / len(changes):+.4f}; target >= 90%)")


if __name__ == "__main__":
    main()
