"""A report page built block by block, written as one self-contained HTML file (figures inline as PNG) and
the same blocks as Markdown beside it (figures as PNG files)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mgr_batch.io import storage

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
font-size:14px}th{background:#f0f0f0}img{max-width:100%}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
figure{margin:1em 0}figcaption{color:#555;font-size:13px}h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


@dataclass
class Figure:
    name: str
    title: str
    png: bytes


@dataclass
class Page:
    """What the report shows, as HTML and Markdown blocks in order, and the figures they use."""

    title: str
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.html.append(f"<h2>{html.escape(text)}</h2>")
        self.md += [f"## {text}", ""]

    def para(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [text, ""]

    def table(self, header: list[str], rows: list[list[Any]], counts: list[str | None] | None = None) -> None:
        """A table; ``counts[i]`` names row i's last cell as a count (``data-count``) the browser test checks."""
        out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
        for i, row in enumerate(rows):
            cells = [f"<td>{html.escape(_cell(v))}</td>" for v in row]
            key = counts[i] if counts else None
            if key is not None:
                cells[-1] = f'<td data-count="{html.escape(key)}">{html.escape(_cell(row[-1]))}</td>'
            out.append("<tr>" + "".join(cells) + "</tr>")
        self.html.append("".join(out) + "</tbody></table>")
        self.md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.md += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in rows] + [""]

    def figure(self, fig: Figure) -> None:
        self.figures.append(fig)
        data = base64.b64encode(fig.png).decode()
        self.html.append(
            f'<figure><img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(fig.title)}</figcaption></figure>"
        )
        self.md += [f"![{fig.title}]({fig.name}.png)", ""]

    def pre(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md += ["```", text, "```", ""]

    def write(self, directory: str, so: dict[str, Any] | None) -> None:
        """``directory/index.html``, ``directory/report.md`` and a ``<name>.png`` per figure (local or URL)."""
        title = html.escape(self.title)
        doc = (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style>'
            f"</head><body><h1>{title}</h1>" + "\n".join(self.html) + "</body></html>"
        )
        for fig in self.figures:
            storage.write_bytes_atomic(storage.join(directory, f"{fig.name}.png"), fig.png, so)
        storage.write_bytes_atomic(
            storage.join(directory, "report.md"), "\n".join([f"# {self.title}", "", *self.md]).encode(), so
        )
        storage.write_bytes_atomic(storage.join(directory, "index.html"), doc.encode(), so)


def _cell(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return f"{v:.3f}"
    return str(v)
