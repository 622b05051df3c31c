"""How an answer looks: the counts that the style-controlled leaderboard adjusts for.

Counted once, when an answer is stored (a battle's answer or a lab's recorded one), so the snapshot builder
reads four integers per answer instead of its text. The order is ranking.data.STYLE_FEATURES'.
"""

from __future__ import annotations

import re

COLUMNS = ("tokens", "header_count", "list_count", "bold_count")

_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_HEADER = re.compile(r"^#{1,6}[ \t]+\S", re.M)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+\S", re.M)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def style_counts(text: str) -> dict[str, int]:
    """tokens, header_count, list_count and bold_count of one answer.

    Tokens are words and punctuation marks (`\\w+` runs and single other non-space characters): a
    tokenizer-free stand-in for FastChat's tiktoken count, which needs a download this arena cannot rely on.
    Style control uses only the normalised difference (a - b) / (a + b) of the two sides, so the unit of the
    count does not matter, only that a longer answer counts more. Markdown elements are counted outside
    fenced code blocks, as LMArena does: ATX headers, list items ("-", "*", "+", "1." or "1)" at a line's
    start) and **bold** or __bold__ spans.
    """
    prose = _CODE_BLOCK.sub("", text)
    return {
        "tokens": len(_TOKEN.findall(text)),
        "header_count": len(_HEADER.findall(prose)),
        "list_count": len(_LIST_ITEM.findall(prose)),
        "bold_count": len(_BOLD.findall(prose)),
    }
