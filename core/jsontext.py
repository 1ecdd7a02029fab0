"""Text that is always valid UTF-8, whatever a bad task put into it (a lone surrogate)."""

from __future__ import annotations

import json


def json_line(document: object) -> str:
    """``document`` as one line of JSON, encodable as strict UTF-8.

    Non-ASCII text stays readable (``ensure_ascii=False``), except when some string holds a
    lone surrogate (a JSON field name or a message can carry one): UTF-8 cannot encode it, so
    the whole line is then written with ``\\uXXXX`` escapes, which any JSON reader decodes.
    """
    text = json.dumps(document, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(document, ensure_ascii=True, default=str)
    return text


def encodable(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\udc80``), so that any log formatter can
    write it as UTF-8; other text is returned as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
