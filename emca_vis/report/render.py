"""The report's render stage: ``report.json`` and its figures -> one HTML file and a Markdown file.

Reads only the results folder; no model is loaded, nothing recomputed, so it takes seconds.
The HTML is self-contained (stylesheet inline, PNGs as ``data:`` URIs, no script, nothing
fetched), and well-formed XML as well as HTML, so ordinary XML tools can check it. The same
results give the same bytes: the only date shown is the one stored in ``report.json``.
"""

from __future__ import annotations

import base64
import html
import os
import struct
from pathlib import Path

from ..errors import UserError
from ..outputs import write_text
from ..validation import read_bytes
from . import sections
from .schema import read_report
from .style import CSS

MAX_FIGURE_BYTES = 32 << 20


def png_dpi(data: bytes) -> float:
    """Resolution from a PNG's pHYs chunk (matplotlib writes it); 100 when absent."""
    at = data.find(b"pHYs", 8, 4096)
    if at < 0 or at + 13 > len(data):
        return 100.0
    per_metre_x, _, unit = struct.unpack(">IIB", data[at + 4:at + 13])
    return per_metre_x * 0.0254 if unit == 1 and per_metre_x else 100.0


class Document:
    """Accumulates the HTML and Markdown of the report side by side, numbering tables and figures."""

    def __init__(self, source: Path, markdown_dir: Path):
        self.source, self.markdown_dir = source, markdown_dir
        self.html: list[str] = []
        self.md: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.tables = 0
        self.figures = 0

    def section(self, anchor: str, title: str) -> None:
        self.toc.append((anchor, title))
        number = len(self.toc)
        if self.html:
            self.html.append("</section>")
        self.html.append(f'<section id="{anchor}"><h2>{number}. {html.escape(title)}</h2>')
        self.md += [f"## {number}. {title}", ""]

    def heading(self, title: str) -> None:
        self.html.append(f"<h3>{html.escape(title)}</h3>")
        self.md += [f"### {title}", ""]

    def paragraph(self, text: str, notice: bool = False) -> None:
        attrs = ' class="notice"' if notice else ""
        self.html.append(f"<p{attrs}>{html.escape(text)}</p>")
        self.md += [f"> {text}" if notice else text, ""]

    def bullets(self, items: list[str], css: str = "") -> None:
        attrs = f' class="{css}"' if css else ""
        self.html.append(f"<ul{attrs}>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>")
        self.md += [f"- {item}" for item in items] + [""]

    def table(self, table) -> None:
        from .tables import table_html, table_markdown

        self.tables += 1
        self.html.append(table_html(table, f"Table {self.tables}"))
        self.md += [table_markdown(table, f"Table {self.tables}"), ""]

    def figure(self, relative: str, caption: str, alt: str) -> None:
        """Embed a PNG, shown at 100 dpi (at most the page's width), numbered and captioned."""
        path = self.source / relative
        try:
            data = read_bytes(path, "file", MAX_FIGURE_BYTES)
        except UserError as error:
            raise UserError(f"{error}; report.json names it as a figure: recompute the report") from None
        if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
            raise UserError(f"{path}: not a PNG file")
        width, height = struct.unpack(">II", data[16:24])
        shown = 100 / png_dpi(data)  # shown at 100 dpi, figure text is about the size of the body text
        self.figures += 1
        encoded = base64.b64encode(data).decode("ascii")
        self.html.append(f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}" '
                         f'width="{round(width * shown)}" height="{round(height * shown)}" />'
                         f"<figcaption><b>Figure {self.figures}.</b> {html.escape(caption)}</figcaption></figure>")
        link = Path(os.path.relpath(path, self.markdown_dir)).as_posix()
        self.md += [f"![{alt}]({link})", "", f"*Figure {self.figures}.* {caption}", ""]

    def code(self, text: str) -> None:
        self.html.append(f"<pre><code>{html.escape(text)}</code></pre>")
        self.md += ["```", text, "```", ""]

    def raw(self, html_text: str, md_text: str) -> None:
        self.html.append(html_text)
        self.md += [md_text, ""]


def page(report: dict, doc: Document) -> str:
    title = html.escape(report["title"])
    toc = "".join(f'<li><a href="#{anchor}">{html.escape(name)}</a></li>' for anchor, name in doc.toc)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en" xmlns="http://www.w3.org/1999/xhtml">',
        "<head>",
        '<meta charset="utf-8" />',
        '<meta name="viewport" content="width=device-width, initial-scale=1" />',
        f'<meta name="generator" content="emca-vis {html.escape(report["version"])}" />',
        f"<title>{title}</title>",
        f"<style>\n{CSS}</style>",
        "</head>",
        "<body><main>",
        f"<header><h1>{title}</h1>",
        f'<p class="subtitle">{html.escape(sections.subtitle(report))}</p></header>',
        f'<nav class="toc" aria-label="Contents"><b>Contents</b><ol>{toc}</ol></nav>',
        *doc.html,
        "</section>",
        f"<footer>{html.escape(sections.footer(report))}</footer>",
        "</main></body>",
        "</html>",
        "",
    ])


def load(source: Path) -> dict:
    """The checked ``report.json`` of a results folder."""
    path = Path(source) / "report.json"
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: no such file; compute the report first (python -m emca_vis.report --out "
                        f"{source})")
    return read_report(path)


def render(source: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` for the results in ``source`` (into ``out``,
    default ``source``); returns their paths."""
    source = Path(source)
    out = Path(out) if out is not None else source
    report = load(source)
    out.mkdir(parents=True, exist_ok=True)
    doc = Document(source, out)
    sections.build(report, doc)
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, page(report, doc))
    header = [f"# {report['title']}", "", sections.subtitle(report), ""]
    write_text(md_path, "\n".join(header + doc.md + ["---", "", sections.footer(report), ""]))
    return html_path, md_path
