"""Opaque page tokens, bound to the query that made them.

A token carries only a position and a digest of the query's filters; it grants nothing (every
page is authorised afresh). A token used with a different query is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from bank.domain.entries import canonical_hash
from bank.domain.errors import invalid
from bank.domain.limits import ID_PATTERN, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, PAGE_TOKEN_LENGTH_MAX

_ID = re.compile(ID_PATTERN)


def page_size(requested: int, field: str = "page_size") -> int:
    """0 means the default; larger than the maximum is coerced down; negative is refused."""
    if requested < 0:
        raise invalid(field, "must not be negative")
    if requested == 0:
        return PAGE_SIZE_DEFAULT
    return min(requested, PAGE_SIZE_MAX)


def encode_token(query: dict[str, Any], position: Any) -> str:
    body = {"q": canonical_hash(query)[:16], "p": position}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad(field: str) -> Exception:
    return invalid(field, "is not a page token issued by this service")


def _int64(value: Any) -> bool:
    return type(value) is int and -(2**63) <= value < 2**63


def position_str(position: Any, field: str = "page_token") -> str:
    """A token position that must be an id string (as ListAccounts issues)."""
    if position is None:
        return ""
    if not isinstance(position, str) or not _ID.fullmatch(position):
        raise _bad(field)
    return position


def position_int(position: Any, field: str = "page_token") -> int | None:
    if position is None:
        return None
    if not _int64(position):
        raise _bad(field)
    return int(position)


def position_pair(position: Any, field: str = "page_token") -> tuple[int, int] | None:
    if position is None:
        return None
    if not (isinstance(position, list) and len(position) == 2 and all(map(_int64, position))):
        raise _bad(field)
    return int(position[0]), int(position[1])


def decode_token(token: str, query: dict[str, Any], field: str = "page_token") -> Any:
    """The position in `token`, or None for an empty token; callers check its shape with
    `position_str`, `position_int` or `position_pair`. Raises `InvalidArgument`."""
    if not token:
        return None
    if len(token) > PAGE_TOKEN_LENGTH_MAX:
        raise _bad(field)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        digest, position = body["q"], body["p"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _bad(field) from None
    if digest != canonical_hash(query)[:16]:
        raise invalid(field, "was issued for a different query (filters must not change "
                      "between pages)")
    return position
