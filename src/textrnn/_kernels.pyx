"""Compiled single-pass loops over a string array's UTF-8 bytes (Cython, built when the package is
installed): the common rows' normalisation, the cut into tokens and the lookup of their ids, the text
hash, the small loops of encoding and counting, where a CSV file's records end, and a UTF-8 check in C with AVX2. `textrnn.kernels` is their Python face; see it for why they
exist.

Every loop runs without the GIL on raw pointers into arrays allocated (at their final size, or grown) by
the Python-level function that calls it. Bounds are not checked: each loop writes only within what its
caller allocated from a count or a bound, which the comments name. The directives (no bounds checks,
no negative indices, C division) are setup.py's; `make test-boundscheck` runs the tests on a build
with the checks on.
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy

# Set by setup.py: the md5 of this file when it was compiled, so a stale build is caught on import.
cdef extern from *:
    const char *TEXTRNN_KERNELS_SOURCE_MD5

SOURCE_MD5 = TEXTRNN_KERNELS_SOURCE_MD5.decode("ascii")

# Set by setup.py: whether this build checks every index (the build `make test-boundscheck` tests).
cdef extern from *:
    int TEXTRNN_KERNELS_BOUNDSCHECK

BOUNDS_CHECKED = bool(TEXTRNN_KERNELS_BOUNDSCHECK)

cdef extern from *:
    """
    /* UTF-8 validation 32 bytes at a time with AVX2: the lookup algorithm of simdjson and simdutf
       (J. Keiser, D. Lemire, "Validating UTF-8 in less than one instruction per byte", 2021). Each byte
       is checked against the one, two and three before it: three 16-entry tables, indexed by the nibbles
       of a byte and of the byte before it, flag every invalid pair (a continuation byte where none may be,
       a lead byte without its continuation bytes, overlong forms, surrogates, code points past U+10FFFF);
       a third or fourth byte of a sequence must be a continuation. Chosen at run time: the CPU must have
       AVX2 (`textrnn_utf8_check_is_fast`); elsewhere the caller checks otherwise. */
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <immintrin.h>
    #define U8_TOO_SHORT 0x01
    #define U8_TOO_LONG 0x02
    #define U8_OVERLONG_3 0x04
    #define U8_TOO_LARGE 0x08
    #define U8_SURROGATE 0x10
    #define U8_OVERLONG_2 0x20
    #define U8_TOO_LARGE_1000 0x40
    #define U8_OVERLONG_4 0x40
    #define U8_TWO_CONTS 0x80
    #define U8_CARRY (U8_TOO_SHORT | U8_TOO_LONG | U8_TWO_CONTS)
    #define U8_TABLE(...) _mm256_setr_epi8(__VA_ARGS__, __VA_ARGS__)

    __attribute__((target("avx2")))
    static int textrnn_utf8_valid_avx2(const uint8_t *data, size_t n) {
        const __m256i byte_1_high = U8_TABLE(
            U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG,
            U8_TWO_CONTS, U8_TWO_CONTS, U8_TWO_CONTS, U8_TWO_CONTS,
            U8_TOO_SHORT | U8_OVERLONG_2, U8_TOO_SHORT, U8_TOO_SHORT | U8_OVERLONG_3 | U8_SURROGATE,
            U8_TOO_SHORT | U8_TOO_LARGE | U8_TOO_LARGE_1000 | U8_OVERLONG_4);
        const __m256i byte_1_low = U8_TABLE(
            U8_CARRY | U8_OVERLONG_3 | U8_OVERLONG_2 | U8_OVERLONG_4, U8_CARRY | U8_OVERLONG_2, U8_CARRY, U8_CARRY,
            U8_CARRY | U8_TOO_LARGE, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000,
            U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000,
            U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000,
            U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000,
            U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000 | U8_SURROGATE,
            U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000);
        const __m256i byte_2_high = U8_TABLE(
            U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT,
            U8_TOO_SHORT,
            U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_OVERLONG_3 | U8_TOO_LARGE_1000 | U8_OVERLONG_4,
            U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_OVERLONG_3 | U8_TOO_LARGE,
            U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_SURROGATE | U8_TOO_LARGE,
            U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_SURROGATE | U8_TOO_LARGE,
            U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT);
        /* A lead byte in the last three places of a block that its own block cannot complete. */
        const __m256i incomplete_above = _mm256_setr_epi8(
            -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, (char)(0xF0 - 1), (char)(0xE0 - 1), (char)(0xC0 - 1));
        const __m256i nibble = _mm256_set1_epi8(0x0F);
        __m256i error = _mm256_setzero_si256(), previous = _mm256_setzero_si256();
        __m256i incomplete = _mm256_setzero_si256();
        uint8_t tail[32];
        for (size_t i = 0; i < n; i += 32) {
            __m256i input;
            if (n - i >= 32) {
                input = _mm256_loadu_si256((const __m256i *)(data + i));
            } else {  /* the last bytes, followed by zeros (ASCII: an unfinished sequence before them fails) */
                memset(tail, 0, sizeof tail);
                memcpy(tail, data + i, n - i);
                input = _mm256_loadu_si256((const __m256i *)tail);
            }
            if (_mm256_movemask_epi8(input) == 0) {
                error = _mm256_or_si256(error, incomplete);  /* a sequence the block before left open */
                incomplete = _mm256_setzero_si256();
            } else {
                __m256i before = _mm256_permute2x128_si256(previous, input, 0x21);
                __m256i prev1 = _mm256_alignr_epi8(input, before, 15);
                __m256i prev2 = _mm256_alignr_epi8(input, before, 14);
                __m256i prev3 = _mm256_alignr_epi8(input, before, 13);
                __m256i special = _mm256_and_si256(
                    _mm256_and_si256(
                        _mm256_shuffle_epi8(byte_1_high, _mm256_and_si256(_mm256_srli_epi16(prev1, 4), nibble)),
                        _mm256_shuffle_epi8(byte_1_low, _mm256_and_si256(prev1, nibble))),
                    _mm256_shuffle_epi8(byte_2_high, _mm256_and_si256(_mm256_srli_epi16(input, 4), nibble)));
                __m256i third = _mm256_subs_epu8(prev2, _mm256_set1_epi8((char)(0xE0 - 0x80)));
                __m256i fourth = _mm256_subs_epu8(prev3, _mm256_set1_epi8((char)(0xF0 - 0x80)));
                __m256i must_continue = _mm256_and_si256(_mm256_or_si256(third, fourth), _mm256_set1_epi8((char)0x80));
                error = _mm256_or_si256(error, _mm256_xor_si256(must_continue, special));
                incomplete = _mm256_subs_epu8(input, incomplete_above);
            }
            previous = input;
        }
        error = _mm256_or_si256(error, incomplete);
        return _mm256_testz_si256(error, error);
    }

    static int textrnn_utf8_check_is_fast(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    }
    #else
    static int textrnn_utf8_valid_avx2(const uint8_t *data, size_t n) { (void)data; (void)n; return -1; }
    static int textrnn_utf8_check_is_fast(void) { return 0; }
    #endif
    """
    int textrnn_utf8_valid_avx2(const uint8_t *data, size_t n) nogil
    int textrnn_utf8_check_is_fast()

# Whether `utf8_valid` can run here (x86-64 with AVX2); without it, callers check UTF-8 another way.
FAST_UTF8_CHECK = bool(textrnn_utf8_check_is_fast())


def utf8_valid(const uint8_t[::1] data):
    """Whether the bytes are valid UTF-8 (~0.1 ns a byte: see the C above). Only where FAST_UTF8_CHECK."""
    if not FAST_UTF8_CHECK:
        raise RuntimeError("utf8_valid: this CPU has no AVX2 (check kernels.FAST_UTF8_CHECK first)")
    cdef int valid
    with nogil:
        valid = textrnn_utf8_valid_avx2(_bytes_of(data), data.shape[0])
    return valid == 1


cdef enum:
    # Flags of `normalise_common`: which steps of the normalisation are on.
    FLAG_NFKC = 1
    FLAG_LOWERCASE = 2
    FLAG_STRIP_HTML = 4
    FLAG_PLACEHOLDERS = 8
    # What `normalise_common` did with a row (see DONE below).
    ROW_DONE = 0
    ROW_LEFT_TO_ARROW = 1
    ROW_NFKC_FIRST = 2
    # Bits of a code point's traits (one table, so a character costs one lookup): what the normalisation
    # does with it.
    TRAIT_NEEDS_UTF8PROC = 1
    TRAIT_COLLAPSIBLE = 2
    TRAIT_TRIMMED = 4
    TRAIT_LOWER_DIFFERS = 8
    FULL_WIDTH_FIRST = 0xFF01
    FULL_WIDTH_LAST = 0xFF5E
    FULL_WIDTH_SHIFT = 0xFEE0
    IDEOGRAPHIC_SPACE = 0x3000
    # The longest a row can grow: a one-digit number becomes ' xxnum '.
    MAX_GROWTH = 7

NFKC, LOWERCASE, STRIP_HTML, PLACEHOLDERS = FLAG_NFKC, FLAG_LOWERCASE, FLAG_STRIP_HTML, FLAG_PLACEHOLDERS
# What `normalise_common` did with a row: normalised it, or left it for the Arrow passes, or for utf8proc's
# NFKC first (the row holds a character the pass cannot map).
DONE, LEFT_TO_ARROW, NFKC_FIRST = ROW_DONE, ROW_LEFT_TO_ARROW, ROW_NFKC_FIRST
NEEDS_UTF8PROC, COLLAPSIBLE, TRIMMED, LOWER_DIFFERS = (TRAIT_NEEDS_UTF8PROC, TRAIT_COLLAPSIBLE, TRAIT_TRIMMED,
                                                       TRAIT_LOWER_DIFFERS)

cdef const char *PLACEHOLDER_WORD = b"xxnum"
cdef int PLACEHOLDER_LENGTH = 5


cdef inline const uint8_t *_bytes_of(const uint8_t[::1] values) noexcept nogil:
    """The first element's address, or NULL for an empty array (which is then never read)."""
    return &values[0] if values.shape[0] else NULL


cdef inline uint8_t *_writable_bytes_of(uint8_t[::1] values) noexcept nogil:
    return &values[0] if values.shape[0] else NULL


def _as_bytes(values):
    """A bool or uint8 array's bytes as uint8 (a view, no copy)."""
    values = np.ascontiguousarray(values)
    return values.view(np.uint8) if values.dtype == np.bool_ else values.astype(np.uint8, copy=False)


cdef inline int32_t _decode(const uint8_t *data, int64_t i, int *size) noexcept nogil:
    """The code point starting at byte i of valid UTF-8; its length in bytes goes to `size`."""
    cdef int32_t b = data[i]
    if b < 0x80:
        size[0] = 1
        return b
    if b < 0xE0:
        size[0] = 2
        return ((b & 0x1F) << 6) | (data[i + 1] & 0x3F)
    if b < 0xF0:
        size[0] = 3
        return ((b & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
    size[0] = 4
    return (((b & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6)
            | (data[i + 3] & 0x3F))


cdef inline int64_t _encode(uint8_t *out, int64_t pos, int32_t cp) noexcept nogil:
    """Write code point cp as UTF-8 at out[pos]; returns the position after it."""
    if cp < 0x80:
        out[pos] = cp
        return pos + 1
    if cp < 0x800:
        out[pos] = 0xC0 | (cp >> 6)
        out[pos + 1] = 0x80 | (cp & 0x3F)
        return pos + 2
    if cp < 0x10000:
        out[pos] = 0xE0 | (cp >> 12)
        out[pos + 1] = 0x80 | ((cp >> 6) & 0x3F)
        out[pos + 2] = 0x80 | (cp & 0x3F)
        return pos + 3
    out[pos] = 0xF0 | (cp >> 18)
    out[pos + 1] = 0x80 | ((cp >> 12) & 0x3F)
    out[pos + 2] = 0x80 | ((cp >> 6) & 0x3F)
    out[pos + 3] = 0x80 | (cp & 0x3F)
    return pos + 4


cdef inline bint _is_digit(int32_t cp) noexcept nogil:
    return 0x30 <= cp <= 0x39


cdef inline bint _is_word(int32_t cp) noexcept nogil:
    """RE2's \\w, which decides its \\b: ASCII letters, digits and the underscore."""
    return _is_digit(cp) or 0x41 <= cp <= 0x5A or 0x61 <= cp <= 0x7A or cp == 0x5F


cdef inline int32_t _full_width_as_ascii(int32_t cp) noexcept nogil:
    """Full-width forms and the ideographic space mapped as NFKC maps them; any other code point as is."""
    if FULL_WIDTH_FIRST <= cp <= FULL_WIDTH_LAST:
        return cp - FULL_WIDTH_SHIFT
    return 0x20 if cp == IDEOGRAPHIC_SPACE else cp


cdef inline int32_t _mapped(const uint8_t *data, int64_t i, bint nfkc, int *size) noexcept nogil:
    """The code point at byte i (full-width forms mapped if `nfkc`); its length in bytes goes to `size`."""
    cdef int32_t cp = _decode(data, i, size)
    return _full_width_as_ascii(cp) if nfkc else cp


cdef inline bint _is_plain(int32_t cp, uint8_t trait, bint nfkc) noexcept nogil:
    """Whether the normalisation writes this character as it is and no step looks at it: not ASCII (HTML,
    URLs, numbers and the word boundaries are all ASCII), without a trait, and not a full-width form."""
    return (cp >= 0x80 and trait == 0
            and not (nfkc and (cp == IDEOGRAPHIC_SPACE or FULL_WIDTH_FIRST <= cp <= FULL_WIDTH_LAST)))


cdef int64_t _number_end(const uint8_t *data, int64_t i, int64_t end, bint nfkc) noexcept nogil:
    """Where RE2's leftmost-first match of \\b[0-9]+(?:[.,][0-9]+)*\\b starting at digit i ends, or -1.

    Between two digits there is never a word boundary, so the candidate ends are the ends of the digit
    runs; the greedy match backtracks to the longest candidate followed by a non-word character."""
    cdef int64_t best = -1
    cdef int size, after_size
    cdef int32_t cp
    while True:
        while i < end:  # a run of digits
            cp = _mapped(data, i, nfkc, &size)
            if not _is_digit(cp):
                break
            i += size
        if i == end:
            return i
        cp = _mapped(data, i, nfkc, &size)
        if not _is_word(cp):
            best = i
        if (cp != 0x2E and cp != 0x2C) or i + size >= end:
            return best
        if not _is_digit(_mapped(data, i + size, nfkc, &after_size)):
            return best
        i += size


cdef int64_t _normalise_row(const uint8_t *data, int64_t i, int64_t end, int flags, const uint8_t *traits,
                            const int32_t *lower, uint8_t *out, int64_t pos) noexcept nogil:
    """Normalise one row into out[pos:] (room for MAX_GROWTH bytes per input byte); returns the position
    after it, or -LEFT_TO_ARROW if the row holds HTML, a URL or an e-mail, or -NFKC_FIRST if it holds a
    character whose NFKC needs utf8proc (whichever comes first)."""
    cdef bint nfkc = (flags & FLAG_NFKC) != 0, lowercase = (flags & FLAG_LOWERCASE) != 0
    cdef bint strip_html = (flags & FLAG_STRIP_HTML) != 0, placeholders = (flags & FLAG_PLACEHOLDERS) != 0
    cdef int64_t start = pos, number_end, last, run_start
    cdef bint in_run = False
    cdef bint prev_word = False  # whether the character before is one of RE2's word characters (for \b)
    cdef int ws = 0  # w or W characters just before: 'www.' is where a URL match can start
    cdef int size, slash_size, second_size, k
    cdef int32_t cp, mapped
    cdef uint8_t trait
    while i < end:
        cp = _decode(data, i, &size)
        trait = traits[cp]
        if _is_plain(cp, trait, nfkc):
            # Most of a Chinese text: a run of characters that no step changes or looks at, copied whole.
            run_start = i
            i += size
            while i < end:
                cp = _decode(data, i, &size)
                if not _is_plain(cp, traits[cp], nfkc):
                    break
                i += size
            memcpy(out + pos, data + run_start, i - run_start)
            pos += i - run_start
            in_run, prev_word, ws = False, False, 0
            continue
        if nfkc:
            if trait & TRAIT_NEEDS_UTF8PROC:  # never a full-width form: those are mapped here
                return -ROW_NFKC_FIRST
            mapped = _full_width_as_ascii(cp)
            if mapped != cp:
                cp, trait = mapped, traits[mapped]
        if strip_html and (cp == 0x3C or cp == 0x26):
            return -ROW_LEFT_TO_ARROW
        if placeholders:
            if cp == 0x40 or (cp == 0x2E and ws >= 3):
                return -ROW_LEFT_TO_ARROW
            if cp == 0x3A and i + size < end:
                if (_mapped(data, i + size, nfkc, &slash_size) == 0x2F and i + size + slash_size < end
                        and _mapped(data, i + size + slash_size, nfkc, &second_size) == 0x2F):
                    return -ROW_LEFT_TO_ARROW
            ws = ws + 1 if (cp == 0x77 or cp == 0x57) else 0
            if _is_digit(cp) and not prev_word:
                number_end = _number_end(data, i, end, nfkc)
                if number_end >= 0:
                    # ' xxnum ': a space joins the run before it and is not written at the start of a row.
                    if not in_run and pos > start:
                        out[pos] = 0x20
                        pos += 1
                    for k in range(PLACEHOLDER_LENGTH):
                        out[pos] = PLACEHOLDER_WORD[k]
                        pos += 1
                    out[pos] = 0x20
                    pos += 1
                    i, in_run, prev_word, ws = number_end, True, True, 0
                    continue
        prev_word = _is_word(cp)
        if lowercase and trait & TRAIT_LOWER_DIFFERS:
            cp = lower[cp]
            trait = traits[cp]
        if trait & TRAIT_COLLAPSIBLE:  # a run of spaces and control characters becomes one space
            if not in_run and pos > start:
                out[pos] = 0x20
                pos += 1
            in_run = True
        elif pos > start or not trait & TRAIT_TRIMMED:  # nothing trimmable at the start of a row
            pos = _encode(out, pos, cp)
            in_run = False
        i += size
    while pos > start:  # trim the end: step back over the last character while it is trimmable
        last = pos - 1
        while (out[last] & 0xC0) == 0x80:  # a continuation byte
            last -= 1
        cp = _decode(out, last, &size)
        if not traits[cp] & TRAIT_TRIMMED:
            break
        pos = last
    return pos


cdef int64_t _normalise_rows(const uint8_t *data, const int64_t *offsets, int64_t n, const uint8_t *valid,
                             int flags, const uint8_t *traits, const int32_t *lower, uint8_t *out, int64_t capacity,
                             int64_t *out_offsets, uint8_t *status, int64_t row, int64_t *pos) noexcept nogil:
    """Normalise rows from `row` on while the next surely fits in `out`; returns the next row (and
    leaves the position in `pos`)."""
    cdef int64_t start, end, written
    while row < n:
        start, end = offsets[row], offsets[row + 1]
        if pos[0] + MAX_GROWTH * (end - start) > capacity:
            break
        if valid[row]:
            written = _normalise_row(data, start, end, flags, traits, lower, out, pos[0])
            if written < 0:
                status[row] = -written
            else:
                pos[0] = written
        out_offsets[row + 1] = pos[0]
        row += 1
    return row


def normalise_common(const uint8_t[::1] data, const int64_t[::1] offsets, valid, int flags,
                     const uint8_t[::1] traits, const int32_t[::1] lower):
    """Normalise every row that holds no HTML, URL, e-mail or character needing utf8proc.

    Returns (UTF-8 bytes, int64 offsets, status per row (uint8): DONE, LEFT_TO_ARROW or NFKC_FIRST); the
    rows not DONE (and null rows) are left empty here. The output buffer starts a quarter larger than the
    input (normalised text is rarely longer) and doubles when a row might not fit."""
    cdef int64_t n = offsets.shape[0] - 1
    cdef const uint8_t[::1] valid_v = _as_bytes(valid)
    out = np.empty(len(data) + len(data) // 4 + 64, np.uint8)
    out_offsets = np.zeros(n + 1, np.int64)
    status = np.zeros(n, np.uint8)
    cdef uint8_t[::1] out_v = out
    cdef int64_t[::1] out_offsets_v = out_offsets
    cdef uint8_t[::1] status_v = status
    cdef int64_t row = 0, pos = 0, longest
    while True:
        with nogil:
            row = _normalise_rows(_bytes_of(data), &offsets[0], n, _bytes_of(valid_v), flags, &traits[0],
                                  &lower[0], &out_v[0], out_v.shape[0],
                                  &out_offsets_v[0], _writable_bytes_of(status_v), row, &pos)
        if row == n:
            return out[:pos], out_offsets, status
        longest = MAX_GROWTH * (offsets[row + 1] - offsets[row])
        bigger = np.empty(max(2 * len(out), pos + longest + 64), np.uint8)
        bigger[:pos] = out[:pos]
        out = bigger
        out_v = out



cdef inline int64_t _next_token(const uint8_t *data, int64_t i, int64_t end, const uint8_t *classes, int separator,
                                int word, int64_t *start, int32_t *first, int64_t *chars) noexcept nogil:
    """The row's next token from byte i on (the row ends at `end`): a run of `word`-class code points, or
    any other code point that is not a `separator`. Where it starts, its first code point and its length
    in characters go to start, first and chars (0 when the row holds no more tokens); returns the byte
    after it."""
    cdef int size, next_size
    cdef int32_t cp
    while i < end:
        cp = _decode(data, i, &size)
        if classes[cp] == separator:
            i += size
            continue
        start[0], first[0], chars[0] = i, cp, 1
        i += size
        if classes[cp] == word:
            while i < end and classes[_decode(data, i, &next_size)] == word:
                i += next_size
                chars[0] += 1
        return i
    chars[0] = 0
    return end

cdef int64_t _scan_tokens(const uint8_t *data, const int64_t *offsets, int64_t rows, int64_t row,
                          const uint8_t *classes, int separator, int word, int64_t *row_tokens, int32_t *first,
                          int64_t *starts, int64_t *ends, int64_t token_room, int64_t *long_index,
                          int64_t *long_starts, int64_t *long_ends, int64_t long_room,
                          int64_t *found) noexcept nogil:
    """Cut the rows from `row` on into tokens while the next row surely fits in the arrays: a row of n bytes
    has at most n tokens, at most n / 2 of them longer than one character. `found` holds the (tokens,
    longer tokens) written so far; `starts` and `ends` are filled unless NULL. Returns the next row."""
    cdef int64_t t = found[0], w = found[1], i, end, start, chars
    cdef int32_t cp
    while row < rows:
        i, end = offsets[row], offsets[row + 1]
        if t + (end - i) > token_room or w + (end - i) // 2 > long_room:
            break
        while True:
            i = _next_token(data, i, end, classes, separator, word, &start, &cp, &chars)
            if chars == 0:
                break
            if chars > 1:
                long_index[w], long_starts[w], long_ends[w] = t, start, i
                w += 1
            first[t] = cp
            if starts != NULL:
                starts[t], ends[t] = start, i
            t += 1
        row_tokens[row + 1] = t
        row += 1
    found[0], found[1] = t, w
    return row


def _grown(array, int64_t used, int64_t room):
    """`array` with room for `room` items, its first `used` kept."""
    bigger = np.empty(room, array.dtype)
    bigger[:used] = array[:used]
    return bigger


def token_spans(const uint8_t[::1] data, const int64_t[::1] offsets, const uint8_t[::1] classes, int separator,
                int word, bint every_span):
    """The tokens of every row: a run of `word`-class code points is one token, every other code point
    that is not a `separator` is a token of its own; rows never join.

    Returns (row offsets counted in tokens (int64), the first code point of every token (int32), the
    index of every token longer than one character, where each of those starts and ends in `data`, and
    where every token starts and ends if `every_span`, else empty arrays). One pass: the arrays start at
    a guess from the byte count (Chinese text has a token per 3 bytes) and double when a row might not
    fit; what is returned are views of their filled part. (Counting cuts the same tokens in `count_rows`.)"""
    cdef int64_t rows = offsets.shape[0] - 1, row = 0, need
    cdef int64_t token_room = data.shape[0] // 2 + 64
    cdef int64_t long_room = data.shape[0] // 8 + 64
    cdef int64_t found[2]
    found[0] = found[1] = 0
    row_tokens = np.zeros(rows + 1, np.int64)
    first = np.empty(token_room, np.int32)
    spans = [np.empty(token_room if every_span else 1, np.int64) for _ in range(2)]
    longer = [np.empty(long_room, np.int64) for _ in range(3)]
    cdef int64_t[::1] row_tokens_v = row_tokens, starts, ends, long_index, long_starts, long_ends
    cdef int32_t[::1] first_v
    while True:
        first_v, (starts, ends), (long_index, long_starts, long_ends) = first, spans, longer
        with nogil:
            row = _scan_tokens(_bytes_of(data), &offsets[0], rows, row, &classes[0], separator, word,
                               &row_tokens_v[0], &first_v[0], &starts[0] if every_span else NULL,
                               &ends[0] if every_span else NULL, token_room, &long_index[0], &long_starts[0],
                               &long_ends[0], long_room, found)
        if row == rows:
            break
        need = offsets[row + 1] - offsets[row]
        if found[0] + need > token_room:
            token_room = max(2 * token_room, found[0] + need)
            first = _grown(first, found[0], token_room)
            if every_span:
                spans = [_grown(array, found[0], token_room) for array in spans]
        if found[1] + need // 2 > long_room:
            long_room = max(2 * long_room, found[1] + need // 2)
            longer = [_grown(array, found[1], long_room) for array in longer]
    t, w = found[0], found[1]
    span_arrays = [array[:t] for array in spans] if every_span else [np.empty(0, np.int64)] * 2
    return (row_tokens, first[:t], *(array[:w] for array in longer), *span_arrays)



cdef struct _Words:
    # The distinct longer tokens of `count_rows`, in the order first seen: where each first occurs in
    # the data, its length in bytes, its count and hash; and the open-addressing slots (-1 or an index).
    int64_t *starts
    int64_t *lengths
    int64_t *counts
    uint64_t *hashes
    int64_t n
    int64_t room
    int64_t *slots
    uint64_t mask


cdef bint _resized(void **array, int64_t items) noexcept nogil:
    """Resize a malloc'd array of 8-byte items in place of the pointer; False where memory ran out (the
    array is then left as it was)."""
    cdef void *bigger = realloc(array[0], items * 8)
    if bigger == NULL:
        return False
    array[0] = bigger
    return True


cdef inline uint64_t _free_slot(const int64_t *slots, uint64_t mask, uint64_t h) noexcept nogil:
    """The first free slot (-1) of an open-addressing table, probing linearly from hash `h`."""
    cdef uint64_t slot = h & mask
    while slots[slot] != -1:
        slot = (slot + 1) & mask
    return slot


cdef int _words_grow(_Words *w) noexcept nogil:
    """Double the room for distinct words; -1 where memory ran out."""
    cdef int64_t room = 2 * w.room
    if not (_resized(<void **>&w.starts, room) and _resized(<void **>&w.lengths, room)
            and _resized(<void **>&w.counts, room) and _resized(<void **>&w.hashes, room)):
        return -1
    # Slots at least twice the words: rebuilt at the new size from the kept hashes.
    cdef int64_t *slots = <int64_t *>malloc(2 * room * sizeof(int64_t))
    if slots == NULL:
        return -1
    free(w.slots)
    w.slots, w.mask, w.room = slots, <uint64_t>(2 * room - 1), room
    cdef int64_t k
    for k in range(2 * room):
        slots[k] = -1
    for k in range(w.n):
        slots[_free_slot(slots, w.mask, w.hashes[k])] = k
    return 0


cdef int _words_add(_Words *w, const uint8_t *data, int64_t start, int64_t length) noexcept nogil:
    """Count one occurrence of the word data[start:start + length]; -1 where memory ran out."""
    cdef uint64_t h = _fnv1a(data + start, length)
    cdef uint64_t slot = h & w.mask
    cdef int64_t k
    while True:
        k = w.slots[slot]
        if k == -1:
            break
        if w.hashes[k] == h and w.lengths[k] == length and memcmp(data + w.starts[k], data + start, length) == 0:
            w.counts[k] += 1
            return 0
        slot = (slot + 1) & w.mask
    if w.n == w.room:
        if _words_grow(w) < 0:
            return -1
        slot = _free_slot(w.slots, w.mask, h)
    k = w.n
    w.starts[k], w.lengths[k], w.counts[k], w.hashes[k] = start, length, 1, h
    w.slots[slot] = k
    w.n += 1
    return 0


def count_rows(const uint8_t[::1] data, const int64_t[::1] offsets, const uint8_t[::1] classes, int separator,
               int word, int64_t[::1] point_counts):
    """Count the tokens of every row, cut as `token_spans` cuts them: each one-character token in
    `point_counts` (by code point: room for every classified one), the longer ones in a hash table of
    their own. Returns the distinct longer tokens' UTF-8 bytes back to back (uint8), where each starts in
    them (int64, + the end), and how often each occurs (int64), in the order first seen."""
    if point_counts.shape[0] < classes.shape[0]:
        raise ValueError("count_rows: a count for every classified code point")
    cdef _Words w
    w.n, w.room = 0, 512
    w.starts = <int64_t *>malloc(w.room * sizeof(int64_t))
    w.lengths = <int64_t *>malloc(w.room * sizeof(int64_t))
    w.counts = <int64_t *>malloc(w.room * sizeof(int64_t))
    w.hashes = <uint64_t *>malloc(w.room * sizeof(uint64_t))
    w.slots = <int64_t *>malloc(2 * w.room * sizeof(int64_t))
    w.mask = 2 * w.room - 1
    cdef int64_t rows = offsets.shape[0] - 1, row, i, end, start, chars, k
    cdef bint failed = False
    cdef int32_t cp
    cdef const uint8_t *text = _bytes_of(data)
    cdef int64_t[::1] offsets_v, counts_v
    cdef uint8_t[::1] words_v
    try:
        if w.starts == NULL or w.lengths == NULL or w.counts == NULL or w.hashes == NULL or w.slots == NULL:
            raise MemoryError("count_rows: no memory for the word table")
        for k in range(2 * w.room):
            w.slots[k] = -1
        with nogil:
            for row in range(rows):
                i, end = offsets[row], offsets[row + 1]
                while not failed:
                    i = _next_token(text, i, end, &classes[0], separator, word, &start, &cp, &chars)
                    if chars == 0:
                        break
                    if chars > 1:
                        failed = _words_add(&w, text, start, i - start) < 0
                    else:
                        point_counts[cp] += 1
        if failed:
            raise MemoryError("count_rows: no memory for the word table")
        word_offsets, counts = np.zeros(w.n + 1, np.int64), np.empty(w.n, np.int64)
        offsets_v, counts_v = word_offsets, counts
        for k in range(w.n):
            offsets_v[k + 1] = offsets_v[k] + w.lengths[k]
            counts_v[k] = w.counts[k]
        words = np.empty(offsets_v[w.n], np.uint8)
        words_v = words
        for k in range(w.n):
            memcpy(&words_v[offsets_v[k]], text + w.starts[k], w.lengths[k])
        return words, word_offsets, counts
    finally:
        free(w.starts)
        free(w.lengths)
        free(w.counts)
        free(w.hashes)
        free(w.slots)

ctypedef fused ids_t:
    uint16_t
    int32_t
    int64_t


def first_of_each_row(const ids_t[::1] values, const int64_t[::1] offsets, int64_t limit):
    """The first `limit` values of every row (row i is values[offsets[i]:offsets[i+1]]), in an array of
    the values' dtype, and the new int64 offsets."""
    cdef Py_ssize_t r, n = offsets.shape[0] - 1
    cdef int64_t k
    new_offsets = np.zeros(n + 1, np.int64)
    cdef int64_t[::1] new_v = new_offsets
    for r in range(n):
        new_v[r + 1] = new_v[r] + min(offsets[r + 1] - offsets[r], limit)
    if ids_t is uint16_t:
        out = np.empty(new_v[n], np.uint16)
    elif ids_t is int32_t:
        out = np.empty(new_v[n], np.int32)
    else:
        out = np.empty(new_v[n], np.int64)
    cdef ids_t[::1] out_v = out
    with nogil:
        for r in range(n):
            for k in range(new_v[r + 1] - new_v[r]):
                out_v[new_v[r] + k] = values[offsets[r] + k]
    return out, new_offsets


ctypedef fused codes_t:
    int32_t
    int64_t


def count_codes(int64_t[::1] point_counts, int64_t[::1] word_counts, const codes_t[::1] codes, int64_t word_base):
    """Count every token code: a code below `word_base` is a code point (point_counts), the others index
    the batch's words (word_counts)."""
    cdef Py_ssize_t i
    cdef int64_t c
    with nogil:
        for i in range(codes.shape[0]):
            c = codes[i]
            if c < word_base:
                point_counts[c] += 1
            else:
                word_counts[c - word_base] += 1


ctypedef fused out_ids_t:
    uint16_t
    int32_t


def ids_of_codes(const codes_t[::1] codes, const int32_t[::1] point_ids, const int32_t[::1] word_ids,
                 int64_t word_base, out_ids_t[::1] ids):
    """The id of every token code into `ids` (as long as `codes`; its dtype holds every id): a code
    below `word_base` is a code point (point_ids), the others index the batch's words (word_ids)."""
    cdef Py_ssize_t i
    cdef int64_t c
    if ids.shape[0] != codes.shape[0]:
        raise ValueError(f"ids_of_codes: room for {ids.shape[0]} ids, {codes.shape[0]} codes")
    with nogil:
        for i in range(codes.shape[0]):
            c = codes[i]
            ids[i] = <out_ids_t>(point_ids[c] if c < word_base else word_ids[c - word_base])



cdef inline uint64_t _fnv1a(const uint8_t *data, int64_t n) noexcept nogil:
    """FNV-1a of n bytes: the word table's hash (words are a few bytes; no adversary chooses them)."""
    cdef uint64_t h = 14695981039346656037ULL
    cdef int64_t k
    for k in range(n):
        h = (h ^ data[k]) * 1099511628211ULL
    return h


def word_table(const uint8_t[::1] data, const int64_t[::1] offsets):
    """An open-addressing table of the words data[offsets[k]:offsets[k+1]] (distinct): int64 slots, a
    power of two at least twice the words, each -1 or a word's index k, probed linearly from its FNV-1a
    hash. `encode_rows` looks the longer tokens up in it."""
    cdef Py_ssize_t k, n = offsets.shape[0] - 1
    cdef int64_t size = 16
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, np.int64)
    cdef int64_t[::1] slots = table
    cdef uint64_t mask = size - 1, h
    with nogil:
        for k in range(n):
            h = _fnv1a(_bytes_of(data) + offsets[k], offsets[k + 1] - offsets[k])
            slots[_free_slot(&slots[0], mask, h)] = k
    return table


cdef inline int32_t _word_id(const uint8_t *token, int64_t n, const uint8_t *words, const int64_t *word_offsets,
                             const int32_t *word_ids, const int64_t *slots, uint64_t mask,
                             int32_t unknown) noexcept nogil:
    """The id of the word token[:n] in a `word_table`, or `unknown`."""
    cdef uint64_t slot = _fnv1a(token, n) & mask
    cdef int64_t k
    while True:
        k = slots[slot]
        if k == -1:
            return unknown
        if word_offsets[k + 1] - word_offsets[k] == n and memcmp(words + word_offsets[k], token, n) == 0:
            return word_ids[k]
        slot = (slot + 1) & mask


def encode_rows(const uint8_t[::1] data, const int64_t[::1] offsets, const uint8_t[::1] classes, int separator,
                int word, const int32_t[::1] point_ids, const uint8_t[::1] words, const int64_t[::1] word_offsets,
                const int32_t[::1] word_ids, const int64_t[::1] table, int64_t max_len, int32_t unknown,
                out_ids_t[::1] ids):
    """The token ids of every row, cut as `token_spans` cuts, the first `max_len` of each row kept, into
    `ids` (room for min(bytes, max_len) of every row: a row of n bytes has at most n tokens). A
    one-character token's id is point_ids[code point]; a longer one's is word_ids of its entry in `table`
    (a `word_table` of `words`), or `unknown`. Returns the row offsets (int64, rows + 1) and how many ids
    are `unknown`."""
    cdef int64_t rows = offsets.shape[0] - 1, row, i, end, start, t = 0, kept, unknowns = 0, chars
    cdef int32_t cp, id_
    row_offsets = np.zeros(rows + 1, np.int64)
    cdef int64_t[::1] row_v = row_offsets
    cdef const uint8_t *text = _bytes_of(data)
    cdef const uint8_t *word_bytes = _bytes_of(words)
    cdef uint64_t mask = table.shape[0] - 1
    with nogil:
        for row in range(rows):
            i, end, kept = offsets[row], offsets[row + 1], 0
            while kept < max_len:
                i = _next_token(text, i, end, &classes[0], separator, word, &start, &cp, &chars)
                if chars == 0:
                    break
                if chars > 1:
                    id_ = _word_id(text + start, i - start, word_bytes, &word_offsets[0], &word_ids[0],
                                   &table[0], mask, unknown)
                else:
                    id_ = point_ids[cp]
                unknowns += id_ == unknown
                ids[t] = <out_ids_t>id_
                t += 1
                kept += 1
            row_v[row + 1] = t
    return row_offsets, unknowns


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _le64(const uint8_t *p) noexcept nogil:
    cdef uint64_t x = 0
    cdef int k
    for k in range(8):
        x |= (<uint64_t>p[k]) << (8 * k)
    return x


cdef inline void _sip_round(uint64_t *v) noexcept nogil:
    v[0] += v[1]; v[1] = _rotl(v[1], 13); v[1] ^= v[0]; v[0] = _rotl(v[0], 32)
    v[2] += v[3]; v[3] = _rotl(v[3], 16); v[3] ^= v[2]
    v[0] += v[3]; v[3] = _rotl(v[3], 21); v[3] ^= v[0]
    v[2] += v[1]; v[1] = _rotl(v[1], 17); v[1] ^= v[2]; v[2] = _rotl(v[2], 32)


cdef uint64_t _siphash24(const uint8_t *data, int64_t length, uint64_t k0, uint64_t k1) noexcept nogil:
    """SipHash-2-4 of data[:length] (the reference algorithm, as pandas implements it)."""
    cdef uint64_t v[4]
    cdef uint64_t m, b = (<uint64_t>length) << 56
    cdef int64_t i, whole = length - (length & 7)
    cdef int k
    v[0], v[1] = 0x736F6D6570736575ULL ^ k0, 0x646F72616E646F6DULL ^ k1
    v[2], v[3] = 0x6C7967656E657261ULL ^ k0, 0x7465646279746573ULL ^ k1
    for i in range(0, whole, 8):
        m = _le64(data + i)
        v[3] ^= m
        _sip_round(v)
        _sip_round(v)
        v[0] ^= m
    for k in range(length & 7):
        b |= (<uint64_t>data[whole + k]) << (8 * k)
    v[3] ^= b
    _sip_round(v)
    _sip_round(v)
    v[0] ^= b
    v[2] ^= 0xFF
    for k in range(4):
        _sip_round(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


cdef inline uint64_t _splitmix64_finaliser(uint64_t x) noexcept nogil:
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= 0x94D049BB133111EBULL
    return x ^ (x >> 31)


def hash_rows(const uint8_t[::1] data, const int64_t[::1] offsets, bytes key):
    """`pandas.util.hash_array(values, hash_key=key, categorize=False)` of every row's bytes: SipHash-2-4
    keyed by the 16-byte `key`, then the splitmix64 finaliser that pandas applies (a test compares the
    two). One pass over the buffer, without a Python bytes object per row."""
    if len(key) != 16:
        raise ValueError("the hash key must be 16 bytes")
    cdef const uint8_t *key_bytes = key
    cdef uint64_t k0 = _le64(key_bytes), k1 = _le64(key_bytes + 8)
    cdef Py_ssize_t r, n = offsets.shape[0] - 1
    hashes = np.empty(n, np.uint64)
    cdef uint64_t[::1] hashes_v = hashes
    cdef const uint8_t *base = _bytes_of(data)
    with nogil:
        for r in range(n):
            hashes_v[r] = _splitmix64_finaliser(_siphash24(base + offsets[r], offsets[r + 1] - offsets[r], k0, k1))
    return hashes


cdef enum:
    # Where Arrow's CSV parser stands after a byte (its states, with quoting, double quotes, no escape
    # character): at the start of a field, inside an unquoted field, inside a quoted one, or just after a
    # quote inside a quoted field (a second quote makes it a literal quote; anything else ends the quoting).
    CSV_FIELD_START = 0
    CSV_IN_FIELD = 1
    CSV_IN_QUOTES = 2
    CSV_QUOTE_IN_QUOTES = 3

CSV_START = CSV_FIELD_START


cdef inline bint _has_byte(uint64_t word, uint64_t pattern) noexcept nogil:
    """Whether any of the 8 bytes of `word` equals the byte repeated in `pattern` (the classic test for a
    zero byte, applied to word ^ pattern)."""
    cdef uint64_t x = word ^ pattern
    return ((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL) != 0


cdef inline Py_ssize_t _skip_field_bytes(const uint8_t *base, Py_ssize_t i, Py_ssize_t n, uint8_t delimiter) noexcept nogil:
    """The offset of the next delimiter, \\n or \\r at or after i (n if none): 8 bytes at a time, then
    byte by byte."""
    cdef uint64_t word, d = 0x0101010101010101ULL * delimiter
    cdef uint64_t lf = 0x0101010101010101ULL * 10, cr = 0x0101010101010101ULL * 13
    cdef uint8_t c
    while i + 8 <= n:
        memcpy(&word, base + i, 8)
        if _has_byte(word, d) or _has_byte(word, lf) or _has_byte(word, cr):
            break
        i += 8
    while i < n:
        c = base[i]
        if c == delimiter or c == 10 or c == 13:
            break
        i += 1
    return i


def csv_record_ends(const uint8_t[::1] data, int state, uint8_t delimiter, uint8_t quote):
    """Follow Arrow's CSV parser over `data` from `state`; returns (the offset just past the last record
    end in data, or -1 if none; the state after the last byte). A record ends at a line end (\\n, \\r or
    \\r\\n) outside quotes. A \\r as the last byte is not reported as an end: the \\n that may follow
    belongs to it (the state is then a field start, which an empty line leaves unchanged)."""
    cdef Py_ssize_t i = 0, n = data.shape[0]
    cdef int64_t last = -1
    cdef uint8_t c
    cdef const uint8_t *base = _bytes_of(data)
    cdef const void *found
    if state < CSV_FIELD_START or state > CSV_QUOTE_IN_QUOTES:
        raise ValueError(f"not a CSV parser state: {state}")
    with nogil:
        while i < n:
            if state == CSV_IN_QUOTES:
                found = memchr(base + i, quote, n - i)
                if found == NULL:
                    break
                i = <const uint8_t *> found - base + 1
                state = CSV_QUOTE_IN_QUOTES
                continue
            c = base[i]
            if state == CSV_QUOTE_IN_QUOTES:
                if c == quote:
                    state = CSV_IN_QUOTES
                    i += 1
                    continue
                state = CSV_IN_FIELD  # the quoting ended; c is read as part of an unquoted field
            elif state == CSV_FIELD_START and c == quote:
                state = CSV_IN_QUOTES
                i += 1
                continue
            if c == 10 or c == 13:  # \\n, \\r
                state = CSV_FIELD_START
                if c == 13:
                    if i + 1 == n:
                        break
                    if base[i + 1] == 10:
                        i += 1
                last = i + 1
                i += 1
            elif c == delimiter:
                state = CSV_FIELD_START
                i += 1
            else:  # an unquoted field's bytes, up to the next delimiter or line end (quotes are literal there)
                state = CSV_IN_FIELD
                i = _skip_field_bytes(base, i + 1, n, delimiter)
    return last, state
