"""Normalisation and tokenisation, vectorised over Arrow string arrays (RE2 regexes in Arrow compute).

The same functions run in `clean`, `vocab` and torch-free inference, so a text is tokenised exactly as
it was in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

# Placeholders are plain letter runs, so the tokeniser keeps each one whole as a word.
URL_TOKEN, EMAIL_TOKEN, NUM_TOKEN = "xxurl", "xxemail", "xxnum"

_HTML_TAG = r"<[^<>]{0,200}>"
_HTML_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&apos;": "'",
                  "&amp;": "&"}
_NUMERIC_ENTITY = r"&#x?[0-9a-fA-F]{1,6};"
_URL = r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"]+"
_EMAIL = r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b"
_NUMBER = r"\b\d+(?:[.,]\d+)*\b"
_CONTROL = r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}]"
# Each CJK ideograph and each symbol is a token of its own; letters/digits in other scripts form words.
_SPLIT_CJK_AND_SYMBOLS = r"(\p{Han}|[^\p{L}\p{N}\p{M}\s])"
_SPLIT_SYMBOLS = r"([^\p{L}\p{N}\p{M}\s])"  # with jieba, its words stay whole


@dataclass(frozen=True)
class Normalisation:
    """The normalisation settings, saved with the vocabulary so inference applies the same ones."""

    nfkc: bool = True
    lowercase: bool = True
    strip_html: bool = True
    placeholders: bool = True
    max_chars: int = 1000


def normalise(texts: pa.Array, s: Normalisation) -> pa.Array:
    """Normalise a string array; null stays null. Never truncates (callers decide what too long means)."""
    out = texts
    if s.nfkc:
        out = pc.utf8_normalize(out, "NFKC")
    if s.strip_html:
        out = _strip_html(out)
    if s.placeholders:
        out = pc.replace_substring_regex(out, _URL, f" {URL_TOKEN} ")
        out = pc.replace_substring_regex(out, _EMAIL, f" {EMAIL_TOKEN} ")
        out = pc.replace_substring_regex(out, _NUMBER, f" {NUM_TOKEN} ")
    if s.lowercase:
        out = pc.utf8_lower(out)
    out = pc.replace_substring_regex(out, _CONTROL, " ")
    out = pc.replace_substring_regex(out, r"\s+", " ")
    return pc.utf8_trim_whitespace(out)


def _strip_html(texts: pa.Array, max_passes: int = 8) -> pa.Array:
    """Remove tags and decode entities until nothing changes: one pass can uncover new ones
    ('&amp;lt;b&amp;gt;' → '&lt;b&gt;' → '<b>' → ''), and normalising twice must change nothing."""
    for _ in range(max_passes):
        stripped = pc.replace_substring_regex(texts, _HTML_TAG, " ")
        stripped = pc.replace_substring_regex(stripped, _NUMERIC_ENTITY, " ")
        for entity, char in _HTML_ENTITIES.items():
            stripped = pc.replace_substring(stripped, entity, char)
        if stripped.equals(texts):
            break
        texts = stripped
    return texts


def truncate(texts: pa.Array, max_chars: int) -> pa.Array:
    return pc.utf8_slice_codeunits(texts, 0, max_chars)


def tokenise(texts: pa.Array, use_jieba: bool = False) -> pa.ListArray:
    """Normalised texts → a list array of tokens (one list per text)."""
    if use_jieba:
        spaced = pc.replace_substring_regex(_jieba_segment(texts), _SPLIT_SYMBOLS, r" \1 ")
    else:
        spaced = pc.replace_substring_regex(texts, _SPLIT_CJK_AND_SYMBOLS, r" \1 ")
    # Trim first: pyarrow 26's utf8_split_whitespace can keep a trailing space on the last token of an
    # array ("吧 "), depending on memory left by earlier work.
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(spaced))


def _jieba_segment(texts: pa.Array) -> pa.Array:
    """Word segmentation for Chinese: jieba is a Python library, so this path runs per text."""
    import jieba

    jieba.setLogLevel(60)
    return pa.array([None if t is None else " ".join(jieba.cut(t)) for t in texts.to_pylist()], pa.string())
