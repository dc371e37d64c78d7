"""Tables of the report, written once and rendered both as HTML and as Markdown.

Every number comes out of ``report.json`` by JSON pointer (RFC 6901) through :func:`number`,
and the HTML keeps that pointer on the number (``data-json``), so a test (or a reader) can
check that what is shown is what was computed. The best value per column is marked on the
displayed (rounded) values, ties included.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

DASH = "\u2013"


def pointer(*parts) -> str:
    """JSON pointer of a path: ``pointer("models", 0, "params")`` -> ``/models/0/params``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(data, ptr: str):
    """The value at a JSON pointer, ``None`` when a step is missing."""
    for part in ptr.split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(data, list):
            try:
                data = data[int(key)]
            except (ValueError, IndexError):
                return None
        elif isinstance(data, dict):
            data = data.get(key)
        else:
            return None
        if data is None:
            return None
    return data


@dataclass
class Cell:
    text: str
    json: str | None = None  # pointer of the number shown, when it is one
    scale: float = 1.0
    suffix: str = ""
    ci: tuple[Cell, Cell] | None = None
    code: bool = False  # show as code (model labels)

    @property
    def value(self) -> float | None:
        """The displayed number, as compared for "best"."""
        return float(self.text.replace(",", "")) if self.json else None


def number(report: dict, ptr: str, digits: int = 1, scale: float = 1.0, thousands: bool = False, suffix: str = "",
           significant: bool = False, ci: tuple[str, str] | None = None) -> Cell:
    """The number at ``ptr`` times ``scale``, rounded to ``digits`` decimals (or significant
    digits); a dash when absent. ``ci``: pointers of the interval's ends, shown after it."""
    value = resolve(report, ptr)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return Cell(DASH)
    shown = value * scale
    if significant:
        text = f"{shown:.{digits}g}"
        if "e" in text:  # never scientific notation in a table
            text = f"{shown:.{max(digits, 1)}f}"
    else:
        text = f"{shown:,.{digits}f}" if thousands else f"{shown:.{digits}f}"
    if text.startswith("-") and float(text.replace(",", "")) == 0:
        text = text[1:]  # a difference that rounds to zero shows as 0.0, not -0.0
    interval = None
    if ci:
        ends = [number(report, end, digits, scale) for end in ci]
        interval = (ends[0], ends[1]) if all(e.json for e in ends) else None
    return Cell(text, ptr, scale, suffix, interval)


def text(value, code: bool = False) -> Cell:
    return Cell(DASH if value is None or value == "" else str(value), code=code)


@dataclass
class Column:
    title: str
    numeric: bool = False
    best: str | None = None  # "min" or "max": mark the best value of the column
    tooltip: str = ""


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Cell]]
    caption: str = ""
    groups: list[tuple[str, int]] = field(default_factory=list)  # header row above: (title, column span)
    note: str = ""
    wrap: bool = False  # let long text cells wrap (settings, paths)

    def best(self) -> set[tuple[int, int]]:
        """(row, column) of every best value."""
        marked = set()
        for c, column in enumerate(self.columns):
            if not column.best:
                continue
            values = [(r, row[c].value) for r, row in enumerate(self.rows) if row[c].value is not None]
            if len(values) < 2:
                continue
            if len({v for _, v in values}) == 1:
                continue  # all equal: nothing stands out
            pick = min if column.best == "min" else max
            target = pick(v for _, v in values)
            marked |= {(r, c) for r, v in values if v == target}
        return marked


def _cell_html(cell: Cell) -> str:
    if cell.json is None:
        content = html.escape(cell.text)
        return f"<code>{content}</code>" if cell.code else content
    scale = f' data-scale="{cell.scale:g}"' if cell.scale != 1 else ""
    out = f'<span data-json="{html.escape(cell.json)}"{scale}>{html.escape(cell.text)}</span>{html.escape(cell.suffix)}'
    return out


def table_html(table: Table, number_label: str = "") -> str:
    best = table.best()
    lines = ['<figure class="table-figure">']
    if table.caption:
        label = f"<b>{html.escape(number_label)}.</b> " if number_label else ""
        lines.append(f"<figcaption>{label}{html.escape(table.caption)}</figcaption>")
    classes = " ".join(c for c in ("table-wrap", "wrap" if table.wrap else "") if c)
    lines.append(f'<div class="{classes}"><table>')
    lines.append("<thead>")
    if table.groups:
        cells = "".join(f'<th colspan="{span}" class="group">{html.escape(title)}</th>' if title else
                        f'<th colspan="{span}"></th>' for title, span in table.groups)
        lines.append(f"<tr>{cells}</tr>")
    heads = []
    for column in table.columns:
        attrs = ' class="num"' if column.numeric else ""
        attrs += f' title="{html.escape(column.tooltip)}"' if column.tooltip else ""
        heads.append(f'<th scope="col"{attrs}>{html.escape(column.title)}</th>')
    lines.append(f"<tr>{''.join(heads)}</tr></thead><tbody>")
    for r, row in enumerate(table.rows):
        cells = []
        for c, (column, cell) in enumerate(zip(table.columns, row)):
            content = _cell_html(cell)
            classes = ["num"] if column.numeric else []
            if (r, c) in best:
                content = f"<strong>{content}</strong>"
                classes.append("best")
            if cell.ci:
                low, high = (_cell_html(end) for end in cell.ci)
                content += f' <span class="ci">[{low}, {high}]</span>'
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            tag = "th" if c == 0 else "td"
            scope = ' scope="row"' if c == 0 else ""
            cells.append(f"<{tag}{scope}{attrs}>{content}</{tag}>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</tbody></table></div>")
    if table.note:
        lines.append(f'<p class="table-note">{html.escape(table.note)}</p>')
    lines.append("</figure>")
    return "\n".join(lines)


def _md_escape(value: str) -> str:
    return value.replace("|", "\\|")


def table_markdown(table: Table, number_label: str = "") -> str:
    best = table.best()
    lines = []
    if table.caption:
        lines += [f"**{number_label}.** {table.caption}" if number_label else table.caption, ""]
    lines.append("| " + " | ".join(_md_escape(c.title) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|")
    for r, row in enumerate(table.rows):
        cells = []
        for c, cell in enumerate(row):
            shown = f"`{cell.text}`" if cell.code else _md_escape(cell.text)
            shown += cell.suffix if cell.json else ""
            if (r, c) in best:
                shown = f"**{shown}**"
            if cell.ci:
                shown += f" [{cell.ci[0].text}, {cell.ci[1].text}]"
            cells.append(shown)
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines)


def settings_value(value) -> str:
    """A setting as one short line (lists joined, everything else as JSON)."""
    if isinstance(value, list):
        return " ".join(str(v) for v in value) if value else DASH
    if value is None:
        return DASH
    return value if isinstance(value, str) else json.dumps(value)
