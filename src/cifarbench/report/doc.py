"""A tiny document model with two writers: Markdown and one self-contained HTML page.

The report is assembled once as a list of blocks and written twice, so report.md and report.html
can never disagree. Inline markup inside text and table cells is limited to **bold** and `code`.
HTML embeds every figure as a base64 data URI and carries its CSS inline: the page opens from
an e-mail attachment or an air-gapped machine with nothing external to fetch.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str
    id: str | None = None


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Pre:
    text: str


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    id: str | None = None
    numeric: list[bool] | None = None        # right-align these columns
    row_class: list[str] | None = None       # HTML only, e.g. "winner"


@dataclass
class Figure:
    path: Path          # absolute path of the PNG
    rel: str            # path relative to the report (figures/x.png)
    caption: str
    half: bool = False  # HTML: two such figures side by side (e.g. one confusion matrix per model)


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


# ---------------------------------------------------------------- markdown
def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {i}" for i in b.items))
        elif isinstance(b, Pre):
            out.append(f"```\n{b.text.rstrip()}\n```")
        elif isinstance(b, Table):
            num = b.numeric or [False] * len(b.columns)
            lines = ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                     "|" + "|".join("---:" if n else "---" for n in num) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.path.stem}]({b.rel})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------- html
_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"), (re.compile(r"`(.+?)`"), r"<code>\1</code>")]


def _inline(s: str) -> str:
    s = html.escape(s, quote=True)
    for pat, rep in _INLINE:
        s = pat.sub(rep, s)
    return s


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1f23;
 margin:0;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px 32px 64px;background:#fff;box-shadow:0 0 12px #0001}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:21px;margin:36px 0 8px;padding-top:8px;border-top:1px solid #e3e5e8}
h3{font-size:17px;margin:22px 0 6px}
p{margin:8px 0}code{font:13px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:#f0f1f3;padding:1px 4px;
 border-radius:3px}
pre{font:12.5px/1.45 ui-monospace,"DejaVu Sans Mono",monospace;background:#f4f5f7;border:1px solid #e3e5e8;
 padding:10px 12px;overflow:auto;max-height:420px}
table{border-collapse:collapse;margin:10px 0 14px;font-size:13.5px}
th,td{border:1px solid #d9dce1;padding:4px 9px;vertical-align:top}
th{background:#eef0f3;text-align:left;font-weight:600}
tbody tr:nth-child(even){background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.winner td{background:#e8f5e9;font-weight:600}
tr.flag td{background:#fff4e5}
figure{margin:14px 0 22px}figure img{max-width:100%;height:auto;border:1px solid #e3e5e8}
figcaption{font-size:13px;color:#555;margin-top:4px}
figure.half{display:inline-block;width:calc(50% - 12px);margin-right:8px;vertical-align:top}
nav ol{columns:2;font-size:14px;margin:6px 0}
ul{margin:6px 0;padding-left:22px}
"""


def _html_table(b: Table) -> str:
    num = b.numeric or [False] * len(b.columns)
    head = "".join(f"<th>{_inline(c)}</th>" for c in b.columns)
    body = []
    for i, row in enumerate(b.rows):
        cls = b.row_class[i] if b.row_class and b.row_class[i] else ""
        tds = "".join(f'<td class="num">{_inline(c)}</td>' if n else f"<td>{_inline(c)}</td>"
                      for c, n in zip(row, num))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    tid = f' id="{html.escape(b.id)}"' if b.id else ""
    return f"<table{tid}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(doc: Document) -> str:
    parts, toc = [], []
    for b in doc.blocks:
        if isinstance(b, Heading):
            hid = b.id or _slug(b.text)
            if b.level == 2:
                toc.append(f'<li><a href="#{hid}">{_inline(b.text)}</a></li>')
            parts.append(f'<h{b.level} id="{hid}">{_inline(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Pre):
            parts.append(f"<pre>{html.escape(b.text.rstrip())}</pre>")
        elif isinstance(b, Table):
            parts.append(_html_table(b))
        elif isinstance(b, Figure):
            cls = ' class="half"' if b.half else ""
            parts.append(f'<figure{cls}><img src="{_data_uri(b.path)}" alt="{html.escape(b.caption)}">'
                         f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
    nav = f"<nav><ol>{''.join(toc)}</ol></nav>" if toc else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{html.escape(doc.title)}</h1>\n{nav}\n" + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")
