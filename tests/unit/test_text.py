"""The text modules: textrnn.normalisation (NFKC, HTML, placeholders, case, control chars), textrnn.nfkc,
textrnn.tokenisation, textrnn.utf8 and textrnn.code_point_tables."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textrnn import code_point_tables, normalisation, tokenisation, utf8
from textrnn import nfkc as nfkc_module
from textrnn.normalisation import EMAIL_TOKEN, NUM_TOKEN, URL_TOKEN, Normalisation, normalise, truncate
from textrnn.tokenisation import tokenise

DEFAULT = Normalisation()
OFF = Normalisation(nfkc=False, lowercase=False, strip_html=False, placeholders=False)


def norm(text: str | None, settings_: Normalisation = DEFAULT) -> str | None:
    return normalise(pa.array([text], pa.string()), settings_)[0].as_py()


def tokens(text: str) -> list[str]:
    # Arrow splits an empty text into one "" token; every consumer (encode, select_tokens) drops it.
    return [t for t in tokenise(pa.array([text], pa.string()))[0].as_py() if t]


def test_nfkc_turns_full_width_letters_digits_and_space_into_ascii():
    assert norm("Ｈｅｌｌｏ　Ｗｏｒｌｄ！", DEFAULT) == "hello world!"
    assert norm("ＡＢＣ１２３") == "abc123"
    assert norm("ﬁne") == "fine"


def test_html_tags_are_removed():
    assert norm("<p>Great <b>phone</b></p>") == "great phone"
    assert norm('<a href="http://x.com">link</a> text') == "link text"


def test_html_entities_are_decoded_or_removed():
    assert norm("fish &amp; chips") == "fish & chips"
    assert norm("a&nbsp;b") == "a b"
    assert norm("&quot;quoted&quot;") == '"quoted"'
    assert norm("a&#x41;b&#65;c") == "a b c"


def test_url_becomes_xxurl():
    assert norm("see https://example.com/a?b=1 now") == f"see {URL_TOKEN} now"
    assert norm("www.example.org/page") == URL_TOKEN


def test_email_becomes_xxemail():
    assert norm("write to First.Last@Example.co.uk today") == f"write to {EMAIL_TOKEN} today"


def test_numbers_become_xxnum_but_digits_inside_words_stay():
    assert norm("I bought 3 phones for 1,299.50 yuan") == f"i bought {NUM_TOKEN} phones for {NUM_TOKEN} yuan"
    assert norm("mp3 player") == "mp3 player"


def test_text_is_lower_cased():
    assert norm("GREAT Phone") == "great phone"


def test_control_characters_and_whitespace_runs_collapse_to_one_space():
    assert norm("a\x00b\x07c") == "a b c"
    assert norm("  many \t\n\r spaces   ") == "many spaces"
    assert norm("zero\u200bwidth") == "zero width"


def test_null_stays_null_and_empty_stays_empty():
    out = normalise(pa.array([None, "", "x"], pa.string()), DEFAULT)
    assert out.to_pylist() == [None, "", "x"]


def test_every_step_can_be_switched_off():
    text = "Ｈｅｌｌｏ <b>X</b> 12"
    assert norm(text, OFF) == text
    assert norm(text, Normalisation(nfkc=False)) == f"ｈｅｌｌｏ x {NUM_TOKEN}"
    assert norm(text, Normalisation(strip_html=False)) == f"hello <b>x</b> {NUM_TOKEN}"
    assert norm(text, Normalisation(placeholders=False)) == "hello x 12"
    assert norm(text, Normalisation(lowercase=False)) == f"Hello X {NUM_TOKEN}"


def test_chinese_text_is_kept_as_is():
    assert norm("这个手机很好用，推荐！") == "这个手机很好用,推荐!"  # NFKC folds full-width punctuation


def test_normalise_on_examples_is_idempotent():
    examples = ["Ｈｅｌｌｏ　Ｗｏｒｌｄ！", "<p>x</p> &amp; y", "see https://a.b/c and a@b.com 42",
                "这个手机很好用!Great phone, 5 stars.", "a\x00b \t c", "", None]
    once = normalise(pa.array(examples, pa.string()), DEFAULT)
    assert normalise(once, DEFAULT).to_pylist() == once.to_pylist()


@pytest.mark.parametrize("text", ["<<>>", "&amp;lt;", "&lt;b&gt;bold"])
def test_normalise_is_idempotent_on_html_that_decodes_into_html(text):
    once = norm(text)
    assert norm(once) == once


def test_truncate_counts_characters_not_bytes():
    assert truncate(pa.array(["这个手机很好", "abcdef", None]), 2).to_pylist() == ["这个", "ab", None]


def test_each_cjk_character_is_one_token():
    assert tokens("这个手机") == ["这", "个", "手", "机"]


def test_latin_words_stay_whole_and_punctuation_is_its_own_token():
    assert tokens("great phone, really!") == ["great", "phone", ",", "really", "!"]
    assert tokens("don't") == ["don", "'", "t"]


def test_mixed_chinese_and_english_tokens():
    assert tokens("手机great好!") == ["手", "机", "great", "好", "!"]


def test_placeholders_are_single_tokens():
    text = norm("mail a@b.com or visit http://x.org and pay 100!")
    assert tokens(text) == ["mail", EMAIL_TOKEN, "or", "visit", URL_TOKEN, "and", "pay", NUM_TOKEN, "!"]


def test_tokenise_has_no_empty_tokens_at_the_edges():
    out = tokenise(pa.array(["这个!", "!a b.", "good 好"], pa.string())).to_pylist()
    assert out == [["这", "个", "!"], ["!", "a", "b", "."], ["good", "好"]]


def test_tokenise_keeps_one_list_per_text_and_null_for_null():
    out = tokenise(pa.array(["a b", None, "c"], pa.string()))
    assert len(out) == 3
    assert out[1].as_py() is None
    assert [t for t in out[2].as_py() if t] == ["c"]


def test_empty_text_has_no_real_tokens():
    assert tokens("") == []


def test_jieba_keeps_chinese_words_whole():
    out = tokenise(pa.array(["我喜欢这个手机!"]), use_jieba=True)[0].as_py()
    assert "".join(out) == "我喜欢这个手机!"
    assert "手机" in out and out[-1] == "!"


def test_jieba_tokens_are_never_empty_and_null_stays_null():
    out = tokenise(pa.array(["", " 北京 ", None, "  ", "好!"]), use_jieba=True).to_pylist()
    assert out == [[], ["北京"], None, [], ["好", "!"]]


arbitrary_texts = st.lists(st.one_of(st.none(), st.text(max_size=80)), max_size=6)
flags = st.builds(Normalisation, nfkc=st.booleans(), lowercase=st.booleans(), strip_html=st.booleans(),
                  placeholders=st.booleans())


@settings(max_examples=150, deadline=None)
@given(texts=arbitrary_texts, s=flags)
def test_normalise_never_raises_and_keeps_length_and_nulls(texts, s):
    out = normalise(pa.array(texts, pa.string()), s)
    assert len(out) == len(texts)
    assert [v is None for v in out.to_pylist()] == [t is None for t in texts]
    for value in out.to_pylist():
        if value is not None:
            assert value == value.strip() and "  " not in value


@settings(max_examples=150, deadline=None)
@given(texts=arbitrary_texts, s=flags)
def test_normalise_is_idempotent_without_html_stripping(texts, s):
    s = Normalisation(nfkc=s.nfkc, lowercase=s.lowercase, strip_html=False, placeholders=s.placeholders)
    once = normalise(pa.array(texts, pa.string()), s)
    assert normalise(once, s).to_pylist() == once.to_pylist()


html_free = st.text(alphabet=st.characters(blacklist_characters="<>&", blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(html_free, max_size=6))
def test_normalise_is_idempotent_on_text_without_html_characters(texts):
    once = normalise(pa.array(texts, pa.string()), DEFAULT)
    assert normalise(once, DEFAULT).to_pylist() == once.to_pylist()


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_tokens_never_hold_whitespace_and_are_empty_only_for_an_empty_text(texts):
    # Regression: pyarrow's whitespace split could keep a trailing space on the last token of an array.
    normalised = normalise(pa.array(texts, pa.string()), DEFAULT)
    for text, row in zip(normalised.to_pylist(), tokenise(normalised).to_pylist(), strict=True):
        assert all(not any(ch.isspace() for ch in t) for t in row)
        assert all(row) and (row == []) == (text == "")


def _tokens_by_regex(texts: pa.Array) -> list:
    """The tokeniser's definition as one RE2 pass (what tokenise computes without a regex)."""
    spaced = pc.replace_substring_regex(texts, r"(\p{Han}|[^\p{L}\p{N}\p{M}\s])", r" \1 ")
    # Trimmed first: pyarrow's whitespace split can keep a trailing space on an array's last token.
    rows = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(spaced)).to_pylist()
    return [None if row is None else [t for t in row if t] for row in rows]


mixed_script_text = st.text(alphabet=st.one_of(
    st.characters(blacklist_categories=("Cs",)), st.characters(min_codepoint=0x4E00, max_codepoint=0x4E40),
    st.sampled_from(" \t\n\u3000\u00a0\u200bab1!,。")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), mixed_script_text), min_size=1, max_size=8),
       start=st.integers(0, 3))
def test_tokenise_equals_its_regex_definition_on_any_text_and_slice(texts, start):
    array = pa.array(texts, pa.string()).slice(min(start, len(texts)))
    assert tokenise(array).to_pylist() == _tokens_by_regex(array)


numeric_text = st.text(alphabet=st.one_of(
    st.characters(blacklist_categories=("Cs",)), st.characters(whitelist_categories=("Nd",)),
    st.sampled_from("0123456789.,_ aé٣３")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), numeric_text), min_size=1, max_size=8))
def test_number_pattern_matches_what_the_backslash_d_spelling_matches(texts):
    # The pattern spells digits [0-9] because RE2 runs that faster; \d is the documented definition.
    array = pa.array(texts, pa.string())
    assert pc.replace_substring_regex(array, normalisation._NUMBER, "<n>").equals(
        pc.replace_substring_regex(array, r"\b\d+(?:[.,]\d+)*\b", "<n>"))


spacey_text = st.text(alphabet=st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from([" ", "\t", "\n", "\u200b", "\ufeff", "\ue000", "\x00", "\x7f", "a", "中"])), max_size=40)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(spacey_text, min_size=1, max_size=8))
def test_the_space_pass_changes_only_rows_where_its_trigger_is_found(texts):
    # normalise runs the pass only on rows that hold its trigger (a run of spaces or a control character),
    # which is exact only if the pass leaves every other row as it was.
    array = pa.array(texts, pa.string())
    replaced = pc.replace_substring_regex(array, normalisation._SPACE_OR_CONTROL_RUN, " ")
    triggered = pc.match_substring_regex(array, normalisation._SPACE_RUN_OR_CONTROL)
    for before, after, found in zip(texts, replaced.to_pylist(), triggered.to_pylist(), strict=True):
        assert found or after == before


def utf8proc_nfkc(array: pa.Array) -> pa.Array:
    return pc.utf8_normalize(array, "NFKC")


def every_code_point() -> list[str]:
    return [chr(p) for p in range(0x110000) if not 0xD800 <= p < 0xE000]


@pytest.mark.parametrize("before, after", [("", ""), ("Ａ", "，"), ("a", "\u3000"), ("가", "")])
def test_nfkc_equals_utf8proc_for_every_code_point_between_any_neighbours(before, after):
    # Every character alone, and between full-width forms (mapped by numpy) or a Hangul syllable.
    array = pa.array([before + c + after for c in every_code_point()], pa.string())
    assert nfkc_module.nfkc(array).equals(utf8proc_nfkc(array))


def test_characters_that_compose_with_the_one_before_always_take_the_utf8proc_path():
    # The fast path is exact only if no character it keeps can join the one before it: the second
    # character of every canonical decomposition must send its row to utf8proc.
    seconds = {int(parts[1], 16) for parts in (unicodedata.decomposition(c).split() for c in every_code_point())
               if len(parts) == 2 and not parts[0].startswith("<")}
    seconds |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul vowels and trailing consonants
    array = pa.array([chr(p) for p in sorted(seconds)], pa.string())
    assert pc.all(pc.match_substring_regex(array, nfkc_module._nfkc_needs_utf8proc())).as_py()


nfkc_text = st.text(alphabet=st.one_of(
    st.characters(blacklist_categories=("Cs",)), st.characters(min_codepoint=0xFF00, max_codepoint=0xFF60),
    st.sampled_from("a e 中，。！？\u3000\u0301\u0308\u3099カ가\u1100\u1161\u11a8ﬁ①㎏\u00a0😀Å")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), nfkc_text), min_size=1, max_size=8), start=st.integers(0, 3))
def test_nfkc_equals_utf8proc_on_any_text_and_slice(texts, start):
    array = pa.array(texts, pa.string()).slice(min(start, len(texts)))
    assert nfkc_module.nfkc(array).equals(utf8proc_nfkc(array))


trigger_text = st.lists(st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(list("<&:wW@09 a中，") + ["www.", "http://", "a@b.cn", "&amp;", "<b>", "１２", "3.5"])),
    max_size=20).map("".join)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), trigger_text), min_size=1, max_size=8), start=st.integers(0, 3))
def test_rows_holding_a_byte_are_the_rows_a_regex_search_finds(texts, start):
    array = pa.array(texts, pa.string()).slice(min(start, len(texts)))
    for byte_ranges, pattern in ((normalisation._HTML_BYTES, "[<&]"), (normalisation._URL_BYTES, "[:wW]"),
                                 (normalisation._EMAIL_BYTES, "@"), (normalisation._DIGIT_BYTES, "[0-9]")):
        expected = pc.fill_null(pc.match_substring_regex(array, pattern), False).to_numpy(zero_copy_only=False)
        assert normalisation._rows_holding(array, byte_ranges).tolist() == expected.tolist()


def normalise_by_definition(texts: pa.Array) -> pa.Array:
    """Every pass of the default normalisation over every row, as the passes are defined."""
    out = normalisation._strip_html(utf8proc_nfkc(texts))
    for pattern, token in ((normalisation._URL, URL_TOKEN), (normalisation._EMAIL, EMAIL_TOKEN),
                           (normalisation._NUMBER, NUM_TOKEN)):
        out = pc.replace_substring_regex(out, pattern, f" {token} ")
    out = pc.replace_substring_regex(pc.utf8_lower(out), normalisation._SPACE_OR_CONTROL_RUN, " ")
    return pc.utf8_trim_whitespace(out)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), trigger_text), min_size=1, max_size=8), start=st.integers(0, 3))
def test_normalise_gives_what_its_passes_give_on_every_row(texts, start):
    # normalise runs each pass only on the rows that can hold a match: that must change no result.
    array = pa.array(texts, pa.string()).slice(min(start, len(texts)))
    assert normalise(array, DEFAULT).equals(normalise_by_definition(array))


compiled_pass_text = st.lists(st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(list("0123456789.,_ aZé中ÉΣİⅧǅ@<&:/wW\t\x85\u1680\u2028\u200b１Ａ，\u3000\u0301…①℃ﬁ½™＠")
                    + ["www.", "WwW.", "://", "1.2", "3,4.", "12a", "a1", "_9", "9_", "1.2a", "  ", "ww…", "1…2"])),
    max_size=24).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), compiled_pass_text), min_size=1, max_size=8),
       start=st.integers(0, 3), s=flags)
def test_the_compiled_pass_gives_what_the_arrow_passes_give_for_any_settings(texts, start, s):
    # The compiled pass normalises the rows without HTML, URL, e-mail or a character needing utf8proc;
    # the Arrow passes, which normalise the other rows, are the reference for every row.
    array = pa.array(texts, pa.string()).slice(min(start, len(texts)))
    assert normalise(array, s).equals(normalisation._normalise_with_arrow(array, s))


def test_the_compiled_pass_takes_the_common_rows():
    # Chinese reviews with numbers, full-width punctuation and upper case; no row is left to Arrow.
    texts = pa.array(["这个手机１２３元，Very GOOD！", "第2.5版  很好\t", "ÉTÉ 3,5 kg"], pa.string())
    tables = normalisation._normalisation_tables()
    flags = normalisation.kernels.NFKC | normalisation.kernels.LOWERCASE | normalisation.kernels.PLACEHOLDERS
    _, _, status = normalisation.kernels.normalise_common(
        utf8.utf8_bytes(texts), utf8.utf8_row_offsets(texts), np.ones(3, bool), flags, *tables)
    assert (status == normalisation.kernels.DONE).all()
    assert normalise(texts, DEFAULT).to_pylist() == ["这个手机 xxnum 元,very good!", "第 xxnum 版 很好", "été xxnum kg"]


def test_rows_with_a_character_needing_utf8proc_take_its_nfkc_then_the_compiled_pass():
    # '…' is NFKC's '...', '①' its '1' (a number then), 'ﬁ' its 'fi'; 'www…' becomes 'www...', where a
    # URL can start: that row goes on to the Arrow passes. Every row must equal the Arrow passes' result.
    texts = pa.array(["等了很久…终于到了", "第①名", "ﬁne", "www…", "<b>…</b>", None], pa.string())
    tables = normalisation._normalisation_tables()
    _, _, status = normalisation.kernels.normalise_common(
        utf8.utf8_bytes(texts), utf8.utf8_row_offsets(texts), np.array([True] * 5 + [False]),
        15, *tables)
    assert status.tolist() == [normalisation.kernels.NFKC_FIRST] * 4 + [normalisation.kernels.LEFT_TO_ARROW, 0]
    assert normalise(texts, DEFAULT).equals(normalisation._normalise_with_arrow(texts, DEFAULT))
    assert normalise(texts, DEFAULT).to_pylist()[:3] == ["等了很久...终于到了", "第 xxnum 名", "fine"]


def test_a_build_of_the_kernels_older_than_their_source_is_refused(tmp_path):
    from textrnn import kernels

    kernels.check_build_is_current()  # this checkout's build matches its source
    edited = tmp_path / "_kernels.pyx"
    edited.write_bytes((Path(kernels.__file__).with_name("_kernels.pyx")).read_bytes() + b"\n# edited\n")
    with pytest.raises(ImportError, match="make setup"):
        kernels.check_build_is_current(edited)


def test_code_point_tables_are_kept_on_disk_and_rebuilt_when_unreadable(tmp_path, monkeypatch):
    monkeypatch.setattr(code_point_tables, "_TABLES_DIR", tmp_path)
    builds = []

    def _sample():
        builds.append(1)
        return np.arange(5, dtype=np.int32), np.array([True, False])

    def _single():
        builds.append(2)
        return np.arange(3, dtype=np.uint8)

    pair, single = code_point_tables.once_per_installation(_sample), code_point_tables.once_per_installation(_single)
    first, alone = pair(), single()
    for remembered in (pair, single):
        remembered.cache_clear()  # a new process: from the files
    again, alone_again = pair(), single()
    assert builds == [1, 2]
    assert isinstance(again, tuple) and [a.tolist() for a in again] == [a.tolist() for a in first]
    assert [a.dtype for a in again] == [np.int32, np.bool_] and alone_again.tolist() == alone.tolist()
    (saved,) = tmp_path.glob("textrnn_sample-*.npz")
    saved.write_bytes(b"not an npz file")
    pair.cache_clear()
    assert [a.tolist() for a in pair()] == [a.tolist() for a in first] and builds == [1, 2, 1]


def test_the_kept_tables_equal_the_tables_asked_of_the_engines_now():
    for remembered in (normalisation._normalisation_tables, tokenisation._character_classes,
                       nfkc_module.nfkc_allowed_points):
        fresh, kept = remembered.__wrapped__.__wrapped__(), remembered()
        for a, b in zip(fresh if isinstance(fresh, tuple) else (fresh,), kept if isinstance(kept, tuple) else (kept,)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
