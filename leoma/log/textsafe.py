"""Untrusted text made safe to record: one check for every string from outside.

Strings reach us from the chain (commitments), buckets and peers, miners' chutes, the judge and
HTTP clients. `json.loads` happily returns a lone surrogate (`"\\ud800"` is valid JSON escape
syntax), and one such string makes the canonical encoder raise `UnicodeEncodeError` — which, in
a batch of events, used to stop the record of every miner. So before a body is built:

* `text_problem(text, ...)` names what is wrong with a string (lone surrogate, control character,
  too long) or returns `""`; callers turn a problem into an invalid item with the reason
  `invalid_text:<field>` and go on with the others;
* `safe_text(text, ...)` makes free text (a judge's reasoning, an error detail) recordable by
  escaping what cannot be encoded and cutting it to size, for fields that only describe;
* `unsafe_field(body)` walks an event body and names the first string field that cannot be
  encoded as it is (the last line of defence before an append).
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

__all__ = ["DEFAULT_MAX_CHARS", "invalid_text_reason", "safe_text", "text_problem", "unsafe_field"]

DEFAULT_MAX_CHARS: Final = 4096
# C0 controls and DEL; tab, newline and carriage return are allowed only in free text.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_STRICT: Final = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")


def text_problem(text: object, *, max_chars: int = DEFAULT_MAX_CHARS, free_text: bool = False) -> str:
    """What makes `text` unfit to record as it is (`""` when it is fine).

    Identifiers (`free_text=False`) may hold no control character at all; free text may hold
    tab, newline and carriage return.
    """
    if not isinstance(text, str):
        return f"not a string ({type(text).__name__})"
    if len(text) > max_chars:
        return f"longer than {max_chars} characters"
    if _SURROGATE.search(text):
        return "holds a lone surrogate (not encodable as UTF-8)"
    if (_CONTROL if free_text else _CONTROL_STRICT).search(text):
        return "holds a control character"
    return ""


def invalid_text_reason(field: str) -> str:
    """The reason an item fails with when its `field` cannot be recorded."""
    return f"invalid_text:{field}"


def safe_text(text: object, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """`text` cut to `max_chars`, with lone surrogates and stray control characters escaped.

    For descriptive fields only: the result is always encodable, and readable by a person.
    """
    s = text if isinstance(text, str) else str(text)
    s = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", s)
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)
    return s[:max_chars]


def _walk(value: Any, path: str) -> str:
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else ""
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found = _walk(getattr(value, name), f"{path}.{name}" if path else name)
            if found:
                return found
        return ""
    if isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            found = _walk(item, f"{path}[{i}]")
            if found:
                return found
        return ""
    if isinstance(value, dict):
        for k, v in value.items():
            found = _walk(k, f"{path}{{key}}") or _walk(v, f"{path}.{k}" if isinstance(k, str) else path)
            if found:
                return found
    return ""


def unsafe_field(body: Any) -> str:
    """The dotted path of the first string in `body` that cannot be encoded (`""` when none)."""
    return _walk(body, "")
