"""A run's text shown as text: the one place that says how a run's fields meet Markdown.

Runs come from colleagues and from imported zip files, so every field a run carries (author,
notes, tags, model and layer names, edit text, class names, exercise answers, file names, a run
id from the URL) is text written by someone else. Streamlit 1.67 renders GitHub-flavoured
Markdown, plus its own directives (``:red[..]``, ``:material/icon:``, emoji shortcodes, ``$``
maths), in ``st.markdown``, ``st.write`` with a string, ``st.info/warning/error/success``,
``st.caption``, ``st.toast``, ``st.title/header/subheader``, ``st.table`` cells, and in widget
labels, radio options, metric labels *and values*, expander and tab labels. There a run saved
with author ``![y](http://host/pixel.png)`` makes every viewer's browser fetch that URL, and
``[open results](http://host/phish)`` is a link the viewer did not write. Raw HTML is shown as
text (``unsafe_allow_html`` is off by default and hooklab never turns it on), but GFM turns any
``http://…``, ``www.…`` or ``name@host.tld`` into a link, even after backslash escapes.

How to show a run's text:

* best, no Markdown at all: ``st.text``, ``st.code``, ``st.dataframe`` (cells are plain text),
  selectbox / multiselect *options* (``format_func`` text is plain);
* inside Markdown, a short field: :func:`code` (an inline code span: no link, image, HTML,
  emoji, directive, maths or autolink can form in it; the text is shown exactly, on one line);
* inside Markdown, prose that must read as prose (notes, an error message quoting a run's
  text): :func:`plain` (Markdown syntax escaped, ordinary text unchanged, URL-like words shown
  as code so no autolink forms).

Plotly renders a subset of HTML (``<a href>``, ``<b>``, ``<br>``) in titles, legend names, tick
labels and hover text: the chart builders escape run text with
:func:`hooklab.charts.common.plain_text`.

Example:
    >>> st.info(" · ".join([f"Run {code(run_id)}", code(author), code(model)]))
    >>> st.markdown(f"**Notes:** {plain(notes)}")
    >>> st.error(f"Opening run: {plain(str(exc))}")
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["code", "plain"]

_BACKTICKS = re.compile(r"`+")
#: Words GFM would turn into a link (protocol, ``www.``, e-mail): shown as code by :func:`plain`.
_URLISH = re.compile(r"\S*(?:://|www\.|@|mailto:|xmpp:)\S*", re.IGNORECASE)
#: Characters that start Markdown / Streamlit syntax anywhere in a line.
_ALWAYS = set("\\`*[]<>$~|&")
#: Streamlit's shortcodes and directives: ``:smile:``, ``:material/search:``, ``:red[`` (both
#: colons are escaped: one is not enough for the emoji shortcodes).
_SHORTCODE = re.compile(r":[\w+\-/]+(?::|(?=\[))")
#: A block marker at the start of a line (heading, quote, list item, rule / setext underline).
_LINE_START = re.compile(r"^(#{1,6}(?=[ \t]|$)|>|[-+*](?=[ \t]|$)|\d{1,9}[.)](?=[ \t]|$)"
                         r"|[-=_*]+[ \t]*$)")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def code(value: Any) -> str:
    """``value`` as an inline code span (``""`` for an empty value): shown literally in any
    Markdown context, on one line (runs of whitespace become one space).

    The fence is one backtick longer than the longest run of backticks inside, padded with a
    space only when the text starts or ends with a backtick (CommonMark strips that space), so
    ordinary text gives the familiar ``"`conv2=scale(0.5)`"``.
    """
    s = " ".join(_text(value).split())
    if not s:
        return ""
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _escape_words(s: str) -> str:
    """Backslash-escape the Markdown syntax in a piece of text with no URL-like word."""
    out = []
    shortcode = {i for m in _SHORTCODE.finditer(s) for i in (m.start(), m.end() - 1)
                 if s[i] == ":"}
    for i, ch in enumerate(s):
        prev = s[i - 1] if i else " "
        nxt = s[i + 1] if i + 1 < len(s) else " "
        if ch in _ALWAYS:
            out.append("\\" + ch)
        elif ch == "_" and not (prev.isalnum() and nxt.isalnum()):  # intraword _ is literal
            out.append("\\_")
        elif ch == ":" and i in shortcode:  # :emoji:, :material/icon:, :red[...]
            out.append("\\:")
        else:
            out.append(ch)
    return "".join(out)


def _escape_line(line: str) -> str:
    """One line: leading blanks dropped (four would make a code block), URL-like words as code,
    the rest escaped, a block marker at the start escaped."""
    line = line.lstrip()
    parts, last = [], 0
    for m in _URLISH.finditer(line):
        parts += [_escape_words(line[last:m.start()]), code(m.group(0))]
        last = m.end()
    text = "".join(parts) + _escape_words(line[last:])
    start = _LINE_START.match(line)
    if start is None or text.startswith(("\\", "`")):
        return text
    if line[0].isdigit():  # "1. x" -> "1\. x": the digits stay plain
        n = len(start.group(1)) - 1
        return text[:n] + "\\" + text[n:]
    return "\\" + text


def plain(value: Any) -> str:
    """``value`` as Markdown that displays exactly that text: Markdown and HTML syntax escaped,
    ordinary words unchanged, and every URL-like word (``http://…``, ``www.…``, ``a@b``) as an
    inline code span, so no link, image or autolink can form. Line breaks are kept.
    """
    return "\n".join(_escape_line(line) for line in _text(value).splitlines())
