"""A corpus too small (or too duplicated) for three splits fails in clean, with the counts that explain it."""

from __future__ import annotations

import dataclasses

import pytest

from textrnn.pipeline import run_stage
from textrnn.stages.clean import EmptySplitError


def test_a_corpus_of_duplicates_fails_in_clean_with_a_located_message(tiny_params, tmp_path):
    corpus = tmp_path / "dupes.csv"
    corpus.write_text("text,label\n" + "同一句话,pos\n" * 40 + "另一句,neg\n" * 40, encoding="utf-8")
    params = dataclasses.replace(tiny_params, ingest=dataclasses.replace(tiny_params.ingest, source=str(corpus),
                                                                          max_rows_per_file=0))
    run_stage("ingest", params)
    with pytest.raises(EmptySplitError) as caught:
        run_stage("clean", params)
    message = str(caught.value)
    assert "80 rows in, 2 kept" in message and "78 rejected (most: duplicate 78)" in message
    assert "split" in message and "clean.test_fraction" in message and str(corpus) in message
    assert not (tmp_path / params.paths.clean).exists()  # nothing half-made for vocab to read
