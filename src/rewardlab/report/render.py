"""Render report sections to Markdown (figures linked) and to one self-contained HTML file.

The HTML has inline CSS and base64-embedded PNGs and no external reference, so it can be mailed,
attached to a ticket or opened offline. Paragraph text may use `code`, **strong** and *emphasis*
(Markdown syntax); the HTML renderer escapes everything and converts just those three.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

__all__ = ["Table", "Figure", "Section", "Block", "escape_markdown", "render_markdown", "render_html"]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str  # key into the figures mapping; a missing figure is skipped
    caption: str
    in_html: bool = True  # False for images of tables the HTML already shows as a real table


Block = Union[str, Table, Figure]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    kind: str = "plain"  # plain | header | verdict | code (string blocks after the first are code)


# ---------------------------------------------------------------- Markdown

# Markdown's inline syntax characters, plus `|` (GFM table cells), `#` and `~` (strikethrough).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~&])")


def escape_markdown(text: object) -> str:
    """Text from the data (names, paths, reasons) as literal Markdown, on one line.

    Backslash escapes are CommonMark's own, so every renderer (and `render_html`) shows the text
    as it was instead of running it as markup or HTML.

    >>> print(escape_markdown("<b>a|b</b> *c*"))
    \\<b\\>a\\|b\\</b\\> \\*c\\*
    """
    return _MD_SPECIAL.sub(r"\\\1", re.sub(r"[\r\n]+", " ", str(text)))


def _md_cell(text: str) -> str:
    # a table cell is literal text (names, numbers, verdicts); prose carries the markup
    return escape_markdown(text)


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
             "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_block(block: Block, section: Section, index: int, figures: dict[str, Path],
              out_dir: Path) -> str:
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        if block.name not in figures:
            return ""
        rel = Path(os.path.relpath(figures[block.name], out_dir)).as_posix()
        return f"![{block.name}]({rel})\n\n*{block.caption}*"
    if section.kind == "code" and index > 0:
        return f"```json\n{block}\n```"
    if section.kind == "verdict":
        return "> " + block
    return block


def render_markdown(sections: list[Section], figures: dict[str, Path], out_dir: Path) -> str:
    """report.md: GitHub-flavoured Markdown; figures are linked relative to `out_dir`."""
    parts = []
    for s in sections:
        parts.append(("# " if s.kind == "header" else "## ") + s.title)
        blocks = (_md_block(b, s, i, figures, out_dir) for i, b in enumerate(s.blocks))
        parts += [b for b in blocks if b]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- HTML

_CSS = """
body{font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1d232a;background:#f6f7f9;margin:0}
main{max-width:1040px;margin:0 auto;padding:28px 28px 60px;background:#fff}
h1{font-size:28px;line-height:1.25;margin:8px 0 6px}
h2{font-size:21px;margin:38px 0 10px;padding-top:10px;border-top:1px solid #e3e6ea}
p{margin:8px 0}.meta{color:#5b6470;font-size:14px}
.verdict{background:#eef5fb;border-left:5px solid #0072B2;padding:14px 18px;margin:14px 0;
 font-size:17px}
table{border-collapse:collapse;margin:12px 0;font-size:14px;width:100%}
th,td{border:1px solid #dde1e6;padding:6px 9px;text-align:left;vertical-align:top}
th{background:#f0f3f7;font-weight:600}tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:16px 0}figure img{max-width:100%;height:auto;border:1px solid #eceef1}
figcaption{color:#5b6470;font-size:14px;margin-top:4px}
code{background:#f0f3f7;padding:1px 4px;border-radius:3px;font-size:90%}
pre{background:#f6f8fa;border:1px solid #e3e6ea;padding:12px;overflow:auto;font-size:12.5px;
 max-height:420px}
nav{font-size:14px;margin:10px 0 0}nav a{color:#0072B2;margin-right:12px;text-decoration:none}
"""

_NUMERIC = re.compile(r"^[−+\-]?[\d,.]+%?$|^—$|^[\d.,]+% – [\d.,]+%$")


def _emphasis(text: str) -> str:
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*\s][^*]*)\*", r"<em>\1</em>", text)


# A backslash escape (CommonMark: before ASCII punctuation) or a code span, whichever comes first,
# so an escaped backtick never opens a code span and a backslash inside one stays literal.
_ESCAPE_OR_CODE = re.compile(r"\\([!-/:-@\[-`{-~])|`([^`]+)`")
_HELD = re.compile(r"\x00(\d+)\x00")


def _inline(text: str) -> str:
    """Escape, then turn `code`, **strong** and *emphasis* into tags; a backslash-escaped character
    (how `escape_markdown` marks data) stays literal; nothing else is interpreted.

    >>> _inline("`clean-*` is *better* & <b> \\\\*not\\\\*")
    '<code>clean-*</code> is <em>better</em> &amp; &lt;b&gt; *not*'
    """
    held: list[str] = []  # escaped characters and code spans, kept away from the emphasis rules

    def hold(m: re.Match[str]) -> str:
        char, code = m.group(1), m.group(2)
        held.append(html.escape(char) if char is not None else f"<code>{html.escape(code)}</code>")
        return f"\x00{len(held) - 1}\x00"

    marked = _ESCAPE_OR_CODE.sub(hold, str(text).replace("\x00", ""))
    return _HELD.sub(lambda m: held[int(m.group(1))], _emphasis(html.escape(marked)))


def _html_table(table: Table) -> str:
    # cells are literal text, as in Markdown: a detector or subset name is never markup
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if _NUMERIC.match(str(c))
                        else f"<td>{html.escape(str(c))}</td>" for c in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_figure(fig: Figure, figures: dict[str, Path]) -> str:
    path = figures.get(fig.name)
    if not fig.in_html or path is None or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(fig.caption)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_inline(fig.caption)}</figcaption></figure>")


def _html_block(block: Block, section: Section, index: int, figures: dict[str, Path]) -> str:
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        return _html_figure(block, figures)
    if section.kind == "code" and index > 0:
        return f"<pre>{html.escape(block)}</pre>"
    css = {"verdict": ' class="verdict"', "header": ' class="meta"'}.get(section.kind, "")
    return f"<p{css}>{_inline(block)}</p>"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _nav(sections: list[Section]) -> str:
    links = "".join(f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>'
                    for s in sections if s.kind not in ("header", "verdict"))
    return f"<nav>Evidence: {links}</nav>"


def render_html(sections: list[Section], figures: dict[str, Path]) -> str:
    """report.html: one file, inline CSS, figures embedded as base64 PNG, no external references."""
    body: list[str] = []
    for s in sections:
        tag = "h1" if s.kind == "header" else "h2"
        body.append(f'<section id="{_anchor(s.title)}"><{tag}>{html.escape(s.title)}</{tag}>')
        body += [_html_block(b, s, i, figures) for i, b in enumerate(s.blocks)]
        if s.kind == "header":
            body.append(_nav(sections))
        body.append("</section>")
    title = html.escape(sections[0].title if sections else "rewardlab report")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{title}</title><style>{_CSS}</style></head><body><main>"
            + "\n".join(b for b in body if b) + "</main></body></html>\n")
