"""Text from FHIR (display names, criterion text) as inert Markdown for a card's `detail`.

CDS Hooks renders `detail` as GitHub Flavored Markdown, and what a FHIR server or a trial file puts in a
display string is data: `1. Stop` must not start a numbered list, `https://x` must not become a link a
clinician might click, `---` must not draw a rule, and a newline must not end the bullet it is in.

`md_escape` makes a string one inline run of plain text wherever the caller puts it (after `- `, at the
start of a line, inside `**...**`): line breaks and control characters become single spaces; every
character with inline meaning gets a CommonMark backslash escape (any ASCII punctuation may be escaped,
and the renderer shows it as itself); and what could open a block at the start of a line (`#`, `1.`,
`-`, `+`, `=`) is escaped there. Bare links are broken where GFM's autolink extension looks for them:
the `:` after a scheme and the `.` after `www` are escaped; an e-mail address gets an invisible WORD
JOINER (U+2060) after its `@`, because GitHub's renderer links `a\\@b.org` all the same (checked with
cmark-gfm), while a domain that does not start with a letter or digit is not one.
"""

from __future__ import annotations

import re

# Inline markup (emphasis, code, links, images, raw HTML, entities, tables, strikethrough, autolinks) and
# the escape character itself. `#` too: a heading may start wherever a caller puts the text.
_INLINE = re.compile(r"[\\`*_\[\]<>|~&!#:()]")
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")  # line endings and controls, Unicode's too
_BLOCK_START = re.compile(r"^(?:([-+=])|(\d{1,9})([.)]))")  # list bullets, setext underlines, "1." / "1)"
_WWW = re.compile(r"(?i)(www)\.")  # anywhere: GFM links `_www.x` too
WORD_JOINER = "\u2060"


def md_escape(text: str) -> str:
    """`text` as Markdown that renders as exactly that text (on one line), with no markup of its own."""
    flat = " ".join(_BREAKS.sub(" ", text).split())
    escaped = _INLINE.sub(lambda m: "\\" + m.group(0), flat)
    escaped = _WWW.sub(r"\1\\.", escaped).replace("@", "@" + WORD_JOINER)
    return _BLOCK_START.sub(_escape_block_start, escaped, count=1)


def _escape_block_start(m: re.Match[str]) -> str:
    if m.group(1):
        return "\\" + m.group(1)
    return f"{m.group(2)}\\{m.group(3)}"
