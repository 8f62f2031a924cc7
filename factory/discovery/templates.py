"""Template mining: group free-text log lines that were printed by the same statement.

Three steps, each general rather than tuned to one system's logs:

1. **Token classes.** A line is split on white space; each token's variable part becomes
   ``<*>``: anything with a digit (numbers, ids, IPs, hex, timestamps, versions, block ids
   like ``blk_-123``), paths, URLs, e-mail addresses, host names (``db1.prod.example.com``,
   with or without a port, and any dotted host with a port: ``trello.com:443``), UUIDs, long
   hex strings, and the value of ``key=value``. A unit after a number is part of the value
   (``5.2 KB``, ``30 ms``), and so is a day or month name before one (``Fri Jun 17 07:07:00``).
   Punctuation around a token is kept (``(42)`` becomes ``(<*>)``). Values in a row are one
   value (``1190 bytes (1.16 KB)``, ``10.0.0.1 ()``), so that lines of one statement line up.
2. **Frequent tokens are the template.** Lines of one length are compared position by
   position: the words a statement prints every time occur as often as the statement,
   more often than the values it interpolates. In each line the tokens at least as
   frequent as the line's most common frequency (the mode) form its pattern; rarer
   ones are treated as variables.
3. **Recurring words split, rare ones are variables.** Within one pattern a position whose
   words recur (every line carries one of a few words, e.g. ``boot``/``wait``/``halt``) holds
   the words of as many statements, and so does one holding only upper-case words (``NEW``,
   ``RUNNING``: an enumeration's values, even if each is seen once); a position holding words
   other statements print too (user and host names), or where lines mostly carry words seen
   once, or many distinct words, or where most lines print a value, is a variable. In batch
   mode each position is judged on all lines, fewest-valued first, within the lines agreeing
   on the constants already found; online, a position with at most three words so far
   splits. Groups whose templates only differ by how many values stand in a row are one
   group (a variable may span tokens: ``1190 bytes (1.16 KB)`` and ``0 bytes``), and in
   batch mode a small group whose template is a special case of a much larger group's joins
   it (``TemplateMiner.settle``).

``TemplateMiner.add`` works online (the statistics grow as lines arrive and groups may
merge later: ``group_of`` follows them). ``prime`` with the whole input first, then ``add``
each line and ``settle``, as ``cluster_lines`` does, gives the batch answer, which is
better: the frequencies are known before the first decision.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any

__all__ = [
    "WILDCARD",
    "TemplateMiner",
    "cluster_lines",
    "grouping_accuracy",
    "mask_lines",
    "mask_tokens",
    "reset_token_cache",
]

WILDCARD = "<*>"

# A position holding at most this many distinct words within one pattern splits the pattern.
_MAX_CONSTANT_VALUES = 3

# Batch mode: a group whose template is a special case of a group this many times its size joins it.
_SPECIAL_CASE_RATIO = 5

# A position with more distinct words than this is a variable even when each of them recurs.
_MAX_RECURRING_CONSTANTS = 10

_EDGE = "()[]{}<>\"'`,;.!?"
_KEY_VALUE = re.compile(r"^([A-Za-z_][\w.\-]*)([=:])(.+)$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_HEX = re.compile(r"^(0x)?[0-9a-fA-F]{8,}$")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:\\")
# A host name (db1.prod.example.com): lower-case labels, at least three.
_HOST_NAME = re.compile(r"^[a-z][a-z0-9\-]*(\.[a-z0-9\-]+){2,}:?$")
# Windows paths, URLs, e-mail addresses, long hex strings and host names, in one pass.
_OTHER_VARIABLE = re.compile(
    "|".join(f"(?:{pattern.pattern})" for pattern in (_WINDOWS_PATH, _URL, _EMAIL, _HEX, _HOST_NAME))
)
# An upper-case word (with _ or -): an enumeration's value, which statements spell out as constants.
_ENUM_WORD = re.compile(r"^[(\[]?[A-Z][A-Z_\-]+[)\],.:;]?$")
# A unit printed after a number belongs to the value ("5.2 KB", "30 ms"): joined to it before
# masking. The unit tokens, as spelled in logs, with the punctuation that may follow them.
_UNITS = {
    *("b", "kb", "mb", "gb", "tb", "pb", "byte", "bytes", "ns", "us", "µs", "ms", "s", "sec", "secs"),
    *("second", "seconds", "min", "mins", "minute", "minutes", "hr", "hrs", "hour", "hours"),
}
_UNIT_TOKENS = frozenset(
    spelling + after
    for spelling in {*_UNITS, *(u.upper() for u in _UNITS), *(u.capitalize() for u in _UNITS), "KiB", "MiB", "GiB"}
    for after in ("", ",", ".", ";", ":", ")", "]")
)
# A day or month name next to a number is part of a timestamp ("Fri Jun 17 07:07:00 2005",
# "17 Jun 2005"): joined to the number after it before masking.
_DATE_WORDS = {
    *("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Jan", "Feb", "Mar", "Apr", "May", "Jun"),
    *("Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec", "Monday", "Tuesday", "Wednesday", "Thursday"),
    *("Friday", "Saturday", "Sunday", "January", "February", "March", "April", "June", "July"),
    *("August", "September", "October", "November", "December"),
}
_DATE_TOKENS = frozenset(
    word + after for word in {*_DATE_WORDS, *(w.upper() for w in _DATE_WORDS)} for after in ("", ",")
)
# Tokens whose meaning depends on their neighbours (see ``_join_context``).
_CONTEXT_TOKENS = _UNIT_TOKENS | _DATE_TOKENS
# Empty brackets or quotes stand where a value was printed empty ("connection from 10.0.0.1 ()").
_EMPTY_VALUES = frozenset({"()", "[]", "{}", "<>", '""', "''"})
# A source file's extension: "Client.java:42" names a line of code, not a host and port.
_SOURCE_SUFFIXES = frozenset(
    {"c", "cc", "cpp", "cs", "go", "h", "hpp", "java", "js", "kt", "m", "php", "pl", "py", "rb", "rs", "scala"}
    | {"sh", "ts"}
)
_DIGITS = re.compile(r"\d+")
_HAS_DIGIT = re.compile(r"\d")
_HEX_LETTERS = "abcdefABCDEF"


def _is_variable(core: str) -> bool:
    """Whether a token's core (a shape: every run of digits spelled 0) is a value."""
    if "0" in core:
        return True
    if core.isalpha():  # a plain word (most tokens): only a long hex string could be a value
        return len(core) >= 8 and not core.strip(_HEX_LETTERS)
    if core.startswith(("/", "~/", "./", "../", "\\\\")) and len(core) > 1:
        return True
    if core.count("/") >= 2:
        return True
    # The other classes each need a mark a plain word lacks: a URL's "://", an address's "@",
    # a drive's ":\\", a host name's dots, a hex string's length.
    if "://" in core or "@" in core or ":\\" in core or core.count(".") >= 2 or len(core) >= 8:
        return _OTHER_VARIABLE.match(core) is not None
    return False


def _mask_shape(token: str) -> str:
    """The masked form of a token whose digits are spelled 0 (see ``_DIGITS``)."""
    core = token.strip(_EDGE)
    if not core:
        return token
    start = len(token) - len(token.lstrip(_EDGE))
    end = start + len(core)
    key_value = _KEY_VALUE.match(core) if ("=" in core or ":" in core) else None
    if _is_variable(core):
        if key_value and "0" not in key_value.group(1) and not _is_host_port(key_value):
            masked = key_value.group(1) + key_value.group(2) + WILDCARD
        else:
            masked = WILDCARD
    elif key_value and key_value.group(2) == "=":
        masked = key_value.group(1) + "=" + WILDCARD
    else:
        return token
    return token[:start] + masked + token[end:]


def _is_host_port(key_value: re.Match[str]) -> bool:
    """Whether ``key:value`` is a host and port (``trello.com:443``): one value, the host included."""
    key, separator, value = key_value.groups()
    if _HOST_NAME.match(key):
        return True
    if separator != ":" or value != "0" or "." not in key:
        return False
    suffix = key.rsplit(".", 1)[1]
    return len(suffix) >= 2 and suffix.isalpha() and suffix.islower() and suffix not in _SOURCE_SUFFIXES


# Token caches: words repeat, so most lookups hit. A token with a digit is masked whatever its
# digits are and no digit survives masking, so a token missing from the first cache is looked
# up by its shape (each run of digits spelled 0): ids, counters and sizes of one form share it.
_MASKED: dict[str, str] = {}
_BY_SHAPE: dict[str, str] = {}
_CACHE_MAX = 200_000


def reset_token_cache() -> None:
    """Forget the masked tokens seen so far (a fresh start, as for a timing run)."""
    _MASKED.clear()
    _BY_SHAPE.clear()


def _mask_word(word: str) -> str:
    """A plain word (letters only) is a value only if it is a long hex string."""
    return WILDCARD if len(word) >= 8 and not word.strip(_HEX_LETTERS) else word


def _mask_new(token: str) -> str:
    if len(_MASKED) >= _CACHE_MAX:
        reset_token_cache()
    if token.isalpha():
        _MASKED[token] = word = _mask_word(token)
        return word
    shape = _DIGITS.sub("0", token)
    masked = _BY_SHAPE.get(shape)
    if masked is None:
        masked = _BY_SHAPE[shape] = _mask_shape(shape)
    _MASKED[token] = masked
    return masked


def mask_tokens(line: str) -> tuple[str, ...]:
    """The line's tokens with their variable parts replaced by ``<*>`` (the first step above)."""
    tokens = line.split()
    if not _CONTEXT_TOKENS.isdisjoint(tokens):
        tokens = _join_context(tokens)
    known = _MASKED.get
    return tuple([known(token) or _mask_new(token) for token in tokens])


def mask_lines(lines: Iterable[str]) -> list[tuple[str, ...]]:
    """``mask_tokens`` of each line, for many lines at once: each new token is looked at once, and
    the digits of all of them are spelled 0 in one pass."""
    split = []
    for line in lines:
        tokens = line.split()
        split.append(_join_context(tokens) if not _CONTEXT_TOKENS.isdisjoint(tokens) else tokens)
    if len(_MASKED) >= _CACHE_MAX:
        reset_token_cache()
    new = set(chain.from_iterable(split)).difference(_MASKED)
    words = [token for token in new if token.isalpha()]
    _MASKED.update((word, _mask_word(word)) for word in words)
    others = list(new.difference(words))
    # No token holds a newline (lines were split on white space): one substitution for them all.
    shapes = _DIGITS.sub("0", "\n".join(others)).split("\n") if others else []
    by_shape = _BY_SHAPE
    for shape in set(shapes).difference(by_shape):
        by_shape[shape] = _mask_shape(shape)
    _MASKED.update(zip(others, map(by_shape.__getitem__, shapes), strict=True))
    known = _MASKED.__getitem__
    return [tuple(map(known, tokens)) for tokens in split]


def _join_context(tokens: list[str]) -> list[str]:
    """Join a unit to the number before it ("5.2" "KB") and a day or month name to the number or
    date word after it ("Fri" "Jun" "17"): each run becomes one token, masked as one value."""
    joined: list[str] = []
    for token in tokens:
        if token in _UNIT_TOKENS and joined and joined[-1][-1:].isdigit():
            joined[-1] += token
        else:
            joined.append(token)
    if _DATE_TOKENS.isdisjoint(joined):
        return joined
    dated: list[str] = []  # built from the end: a date word joins what follows it
    for token in reversed(joined):
        if token in _DATE_TOKENS and dated and _HAS_DIGIT.search(dated[-1]):
            dated[-1] = token + dated[-1]
        else:
            dated.append(token)
    dated.reverse()
    return dated


def _is_value(token: str) -> bool:
    """A masked value, alone or in brackets or punctuation (``<*>``, ``(<*>)``, ``<*>,``), or empty brackets."""
    if WILDCARD in token:
        return token == WILDCARD or not token.replace(WILDCARD, "").strip(_EDGE)
    return token in _EMPTY_VALUES


_ANY_EMPTY_VALUE = "|".join(map(re.escape, sorted(_EMPTY_VALUES)))
_ADJACENT_VALUES = re.compile(
    rf"{re.escape(WILDCARD)}\S*\s\S*{re.escape(WILDCARD)}|{re.escape(WILDCARD)}\S*\s(?:{_ANY_EMPTY_VALUE})(?:\s|$)"
)


def _first_of_each_run(tokens: Iterable[str]) -> list[str]:
    """The tokens, with each run of values in a row (``_is_value``) kept as its first value."""
    out: list[str] = []
    previous_is_value = False
    for token in tokens:
        is_value = _is_value(token)
        if not (is_value and previous_is_value):
            out.append(token)
        previous_is_value = is_value
    return out


def _merge_adjacent_values(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """Values in a row are one value, kept as the first one printed (``1190 bytes (1.16 KB)`` and
    ``0 bytes`` are both ``<*>``; ``10.0.0.1 (host)`` and ``10.0.0.1 ()`` both ``<*>``): a variable
    may span tokens, and lines of one statement then line up position by position."""
    if not _ADJACENT_VALUES.search(" ".join(tokens)):
        return tokens
    return tuple(_first_of_each_run(tokens))


def _collapse(tokens: Iterable[str]) -> tuple[str, ...]:
    """A template's shape: a value in brackets or punctuation (``(<*>)``, ``<*>,``) is a value, as
    are empty brackets (``()``: a value printed empty), and values in a row are one
    (``1190 bytes (1.16 KB)`` and ``0 bytes`` are both one value)."""
    return tuple(WILDCARD if _is_value(token) else token for token in _first_of_each_run(tokens))


class _Pattern:
    """The lines of one length sharing one set of frequent tokens; splits by few-valued positions."""

    __slots__ = ("constants", "decided", "groups", "open_positions", "rows", "values", "variable")

    def __init__(self, constants: tuple[str, ...]) -> None:
        self.constants = constants
        self.open_positions = tuple(i for i, token in enumerate(constants) if token == WILDCARD)
        # Online: the words seen so far at each open position.
        self.values: dict[int, set[str]] = {}
        self.variable: dict[int, bool] = dict.fromkeys(self.open_positions, False)
        self.groups: dict[tuple[str, ...], int] = {}
        # Batch mode: the open positions' words of each distinct line, and how many lines had them.
        self.rows: dict[tuple[str, ...], int] = {}
        self.decided = False

    def key(self, tokens: Sequence[str]) -> tuple[str, ...]:
        return tuple(WILDCARD if self.variable[p] else tokens[p] for p in self.open_positions)

    def template(self, key: tuple[str, ...]) -> tuple[str, ...]:
        filled = list(self.constants)
        for position, value in zip(self.open_positions, key, strict=True):
            filled[position] = value
        return tuple(filled)


class TemplateMiner:
    """Assigns each line a group id; lines printed by the same statement share one.

    Ids are small integers in order of first appearance. Online, two groups may turn out
    to be one later; ``group_of`` gives an id's current group (the smaller id wins).
    """

    def __init__(self, *, max_constant_values: int = _MAX_CONSTANT_VALUES) -> None:
        self._max_values = max_constant_values
        self._frequency: Counter[tuple[int, int, str]] = Counter()
        self._primed = False
        self._patterns: dict[tuple[str, ...], _Pattern] = {}
        self._parent: list[int] = []
        self._counts: list[int] = []
        self._templates: list[tuple[str, ...]] = []
        self._by_shape: dict[tuple[str, ...], int] = {}
        self._by_length: dict[int, list[int]] = {}
        self._seen: dict[tuple[str, ...], int] = {}
        # Batch mode: each primed line's constants (the frequencies no longer change once primed).
        self._primed_constants: dict[tuple[str, ...], tuple[str, ...]] = {}

    # ------------------------------------------------------------------ statistics

    def _observe(self, tokens: Sequence[str]) -> None:
        length = len(tokens)
        frequency = self._frequency
        for position, token in enumerate(tokens):
            if token != WILDCARD:
                frequency[length, position, token] += 1

    def prime(self, lines: Iterable[str]) -> None:
        """Learn the token frequencies of the whole input before the first ``add`` (batch mode)."""
        self.prime_masked(_merge_adjacent_values(mask_tokens(line)) for line in lines)

    def prime_masked(self, masked_lines: Iterable[tuple[str, ...]]) -> None:
        self.prime_distinct(Counter(masked_lines))

    def prime_distinct(self, distinct: Counter[tuple[str, ...]]) -> None:
        """``prime_masked`` for lines already counted: each masked line and how often it occurs."""
        frequency = self._frequency
        # Counted in C: each line's (length, position, token) keys, as often as the line occurs.
        frequency.update(chain.from_iterable(map(_position_keys, distinct.items())))
        self._primed = True
        # With every line known, each open position is judged once, on all of its values.
        patterns = self._patterns
        primed = self._primed_constants
        primed.clear()  # primed again: the frequencies grew
        for tokens, times in distinct.items():
            constants = primed[tokens] = self._constants(tokens)
            pattern = patterns.get(constants)
            if pattern is None:
                pattern = patterns[constants] = _Pattern(constants)
            row = tuple(map(tokens.__getitem__, pattern.open_positions))
            pattern.rows[row] = pattern.rows.get(row, 0) + times
        # Where each word stands in an open position: a word seen there in several patterns
        # (a user or host name printed by several statements) is a value, not a statement's word.
        roaming: dict[str, set[tuple[str, ...]]] = {}
        for constants, pattern in patterns.items():
            for row in pattern.rows:
                for word in row:
                    if word != WILDCARD:
                        roaming.setdefault(word.strip(_EDGE + ":"), set()).add(constants)
        shared = {word for word, where in roaming.items() if len(where) > 1}
        for pattern in patterns.values():
            if not pattern.decided:
                self._decide(pattern, shared)

    def _decide(self, pattern: _Pattern, shared: set[str]) -> None:
        """Judge a pattern's open positions on all its lines: the fewest-valued first, and each
        next one within the lines that agree on the constants found so far (a user name seen
        once with "opened" and once with "closed" is still seen once per statement)."""
        pattern.decided = True
        rows = pattern.rows
        if len(rows) < 2:  # one line's words: every open position holds one word, a constant
            rows.clear()
            return
        slots = range(len(pattern.open_positions))
        distinct = [len({row[i] for row in rows if row[i] != WILDCARD}) for i in slots]
        kept: list[int] = []
        for i in sorted(slots, key=lambda i: (distinct[i], i)):
            counts: dict[tuple[str, ...], Counter[str]] = {}
            values = 0  # lines holding a value (masked) at this position
            for row, times in rows.items():
                if row[i] != WILDCARD:
                    counts.setdefault(tuple(row[k] for k in kept), Counter())[row[i]] += times
                else:
                    values += times
            if _is_variable_position(list(counts.values()), values, self._max_values, shared):
                pattern.variable[pattern.open_positions[i]] = True
            else:
                kept.append(i)
        rows.clear()

    def _constants(self, tokens: Sequence[str]) -> tuple[str, ...]:
        length = len(tokens)
        counts = list(map(self._frequency.__getitem__, zip(repeat(length), range(length), tokens)))
        # The words' frequencies: a wildcard's count (its place) is no word's, and a word not counted
        # yet (online) has none.
        present = list(compress(counts, map(WILDCARD.__ne__, tokens)))
        words = [count for count in present if count]
        if not words:
            return tuple(tokens)
        # The mode of the line's frequencies; on a tie the larger frequency (the statement's words).
        mode = max(set(words), key=lambda value: (words.count(value), value))
        if min(present) >= mode:
            return tuple(tokens)  # every word is as frequent as the statement: all are its words
        return tuple(t if c >= mode else WILDCARD for t, c in zip(tokens, counts, strict=True))

    # ------------------------------------------------------------------ groups

    def _find(self, group: int) -> int:
        parent = self._parent
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    def _union(self, a: int, b: int) -> int:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return ra
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        self._parent[gone] = keep
        self._counts[keep] += self._counts[gone]
        self._counts[gone] = 0
        self._templates[keep] = _merge_templates(self._templates[keep], self._templates[gone])
        return keep

    def _new_group(self, template: tuple[str, ...]) -> int:
        group = len(self._parent)
        self._parent.append(group)
        self._counts.append(0)
        self._templates.append(template)
        shape = _collapse(template)
        other = self._by_shape.get(shape)
        if other is not None:
            return self._union(other, group)
        self._by_shape[shape] = group
        if not self._primed:
            self._by_length.setdefault(len(template), []).append(group)
            group = self._absorb_special_cases(group)
        return group

    def _absorb_special_cases(self, group: int) -> int:
        """Online, a statement's first lines came before its variables were known as such: their
        groups are special cases of the more general template, and join it."""
        template = self._templates[self._find(group)]
        for earlier in self._by_length.get(len(template), []):
            if self._find(earlier) != self._find(group) and _generalizes(
                template, self._templates[self._find(earlier)]
            ):
                group = self._union(earlier, group)
        return self._find(group)

    def _widen(self, pattern: _Pattern, position: int) -> None:
        """A position turned out to be a variable: the groups it kept apart become one."""
        pattern.variable[position] = True
        merged: dict[tuple[str, ...], int] = {}
        for key, group in list(pattern.groups.items()):
            new_key = tuple(
                WILDCARD if pattern.variable[p] else v for p, v in zip(pattern.open_positions, key, strict=True)
            )
            if new_key in merged:
                merged[new_key] = self._union(merged[new_key], group)
            else:
                merged[new_key] = group
        pattern.groups = merged
        for key, group in merged.items():
            root = self._find(group)
            self._templates[root] = _merge_templates(self._templates[root], pattern.template(key))
            if not self._primed:
                self._absorb_special_cases(root)

    def add(self, line: str) -> int:
        """The group id of ``line`` (the root id at this moment)."""
        return self.add_masked(_merge_adjacent_values(mask_tokens(line)))

    def add_masked(self, tokens: tuple[str, ...], times: int = 1) -> int:
        """``add`` for a line already split by ``mask_tokens`` (seen ``times`` times)."""
        known = self._seen.get(tokens)
        if known is not None:
            # Lines identical once masked are one statement: no new evidence, same group.
            root = self._find(known)
            self._counts[root] += times
            return root
        if not self._primed:
            self._observe(tokens)
        constants = self._primed_constants.get(tokens) or self._constants(tokens)
        pattern = self._patterns.get(constants)
        if pattern is None:
            pattern = self._patterns[constants] = _Pattern(constants)
        for position in () if pattern.decided else pattern.open_positions:
            if pattern.variable[position] or tokens[position] == WILDCARD:
                continue
            values = pattern.values.setdefault(position, set())
            values.add(tokens[position])
            if len(values) > self._max_values:
                values.clear()
                self._widen(pattern, position)
        key = pattern.key(tokens)
        group = pattern.groups.get(key)
        if group is None:
            group = pattern.groups[key] = self._new_group(pattern.template(key))
        self._seen[tokens] = group
        root = self._find(group)
        self._counts[root] += times
        return root

    def settle(self) -> None:
        """Batch mode, once every line is added: a small group whose template is a special case of a
        group at least five times its size (the same words, a value wherever they differ) joins it.

        Words are counted by length and position only, so a value that happens to be a word another
        statement prints at that place (a user named ``user``) is counted with that statement's word
        and can be taken for a constant, leaving a few lines in a group of their own.
        """
        counts, templates = self._counts, self._templates
        by_length: dict[int, list[int]] = {}
        for group in range(len(self._parent)):
            if self._parent[group] == group and counts[group]:
                by_length.setdefault(len(templates[group]), []).append(group)
        for groups in by_length.values():
            largest = max(counts[group] for group in groups)
            if len(groups) < 2 or largest < _SPECIAL_CASE_RATIO:
                continue
            # The templates large enough to be general, by where their words stand, then by the words.
            general: dict[tuple[int, ...], tuple[itemgetter[Any], dict[object, list[int]]]] = {}
            for group in groups:
                template = templates[group]
                if counts[group] < _SPECIAL_CASE_RATIO or WILDCARD not in template:
                    continue
                places = tuple(i for i, token in enumerate(template) if token != WILDCARD)
                if places:
                    words_at, by_words = general.setdefault(places, (itemgetter(*places), {}))
                    by_words.setdefault(words_at(template), []).append(group)
            for group in groups:
                if counts[group] * _SPECIAL_CASE_RATIO > largest:
                    continue
                template = templates[group]
                for words_at, by_words in general.values():
                    for other in by_words.get(words_at(template), ()):
                        small, large = self._find(group), self._find(other)
                        if small != large and counts[small] * _SPECIAL_CASE_RATIO <= counts[large]:
                            self._union(small, large)

    def group_of(self, group: int) -> int:
        """The current id of a group an earlier ``add`` returned."""
        return self._find(group)

    def template_of(self, group: int) -> str:
        return " ".join(self._templates[self._find(group)])

    def templates(self) -> list[tuple[str, int]]:
        """Every group's template and line count, the most frequent first."""
        found = [
            (" ".join(self._templates[g]), self._counts[g])
            for g in range(len(self._parent))
            if self._parent[g] == g and self._counts[g]
        ]
        return sorted(found, key=lambda item: (-item[1], item[0]))


def _is_variable_position(
    subsets: Sequence[Counter[str]], values: int, max_constant_values: int, shared: set[str]
) -> bool:
    """Whether the words seen at one open position of a pattern are a variable's values.

    A statement's words recur: every line it prints carries one of them. A variable's values
    are mostly rare, many of them seen once. So a position is a variable when the lines
    holding a word seen only once are a large share of its lines, or when it holds many
    distinct words; a few recurring words are the constants of as many statements. Where
    most lines print a value (``values`` of them: masked), the few words there are values
    the masking missed.
    """
    lines = sum(sum(counts.values()) for counts in subsets)
    if values * 2 >= lines:
        return True
    distinct = max((len(counts) for counts in subsets), default=0)
    if distinct <= 1:
        return False
    if distinct > _MAX_RECURRING_CONSTANTS:
        return True
    if all(_ENUM_WORD.match(word) for counts in subsets for word in counts):
        return False  # NEW, RUNNING, FAILED: the states and levels a statement spells out
    # Words other statements print too are a variable's values (user and host names).
    roaming = sum(count for counts in subsets for word, count in counts.items() if word.strip(_EDGE + ":") in shared)
    if roaming * 2 >= lines:
        return True
    singles = sum(1 for counts in subsets for count in counts.values() if count == 1)
    if distinct > 2 and singles * 2 >= lines:
        return True
    if distinct <= max_constant_values:
        return False
    return singles * 4 >= lines


def _generalizes(general: tuple[str, ...], special: tuple[str, ...]) -> bool:
    """``general`` has a wildcard wherever it differs from ``special`` (and keeps some words)."""
    words = 0
    for g, s in zip(general, special, strict=True):
        if g != WILDCARD:
            if g != s:
                return False
            words += 1
    return words > 0


def _merge_templates(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if len(a) == len(b):
        return tuple(x if x == y else WILDCARD for x, y in zip(a, b, strict=True))
    return a if len(a) <= len(b) else b


def _position_keys(item: tuple[tuple[str, ...], int]) -> Iterable[tuple[int, int, str]]:
    tokens, times = item
    length = len(tokens)
    keys = zip(repeat(length), range(length), tokens)
    # A line seen many times is counted as many times, without a list that long.
    return keys if times == 1 else chain.from_iterable(repeat(tuple(keys), times))


def cluster_lines(lines: Sequence[str]) -> tuple[list[int], TemplateMiner]:
    """Batch mode: one group id per line (1, 2, ... in order of first appearance) and the miner."""
    miner = TemplateMiner()
    # Each distinct line is masked once, and each distinct masked line is grouped once.
    unique = list(dict.fromkeys(lines))
    masked_unique = mask_lines(unique)
    merged = {tokens: _merge_adjacent_values(tokens) for tokens in set(masked_unique)}
    mask_of = dict(zip(unique, map(merged.__getitem__, masked_unique), strict=True))
    masked = list(map(mask_of.__getitem__, lines))
    distinct = Counter(masked)
    miner.prime_distinct(distinct)
    added = [(tokens, miner.add_masked(tokens, times)) for tokens, times in distinct.items()]
    miner.settle()
    numbering: dict[int, int] = {}
    number_of = {tokens: numbering.setdefault(miner.group_of(group), len(numbering) + 1) for tokens, group in added}
    return list(map(number_of.__getitem__, masked)), miner


def grouping_accuracy(predicted: Sequence[object], truth: Sequence[object]) -> float:
    """Grouping accuracy (GA): the share of lines whose predicted group holds exactly their true group's lines."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and true labels differ in length")
    if not truth:
        return 1.0
    by_predicted: dict[object, set[int]] = {}
    by_truth: dict[object, set[int]] = {}
    for index, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        by_predicted.setdefault(p, set()).add(index)
        by_truth.setdefault(t, set()).add(index)
    correct = 0
    for members in by_truth.values():
        first = next(iter(members))
        if by_predicted[predicted[first]] == members:
            correct += len(members)
    return correct / len(truth)
