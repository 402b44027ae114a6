"""The dashboard's HTML: escaping, tables, links, forms and the page around them.

Every value is escaped here unless it is :class:`Markup` (HTML built from escaped
parts); no page uses JavaScript.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

__all__ = ["Markup", "escape", "form", "hidden", "link", "page", "table"]

STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
    ".stale{color:#a00}nav a{margin-right:1em}form{margin:1em 0}"
    "pre{text-align:left;white-space:pre-wrap;max-width:70em}"
    "td.text{text-align:left}.notice{background:#efe;padding:.5em}.refused{background:#fee;padding:.5em}"
)


class Markup(str):
    """Text already escaped."""


def escape(value: object) -> Markup:
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> Markup:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return Markup(f"<table><tr>{head}</tr>{body}</table>")


def link(href: str, text: object) -> Markup:
    return Markup(f'<a href="{html.escape(href)}">{escape(text)}</a>')


def hidden(fields: Mapping[str, object]) -> Markup:
    return Markup(
        "".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(str(value))}">'
            for name, value in fields.items()
            if value not in (None, "")
        )
    )


def form(action: str, body: Markup, *, method: str = "post") -> Markup:
    return Markup(f'<form method="{method}" action="{html.escape(action)}">{body}</form>')


def page(title: str, body: str, *, refresh: int | None, base: str = "/") -> bytes:
    """A whole page; ``refresh`` seconds between reloads (``None``: none, for pages
    with forms, which a reload would reset).  Links are relative to ``base``, where
    the dashboard is mounted (WSGI's ``SCRIPT_NAME``, ASGI's ``root_path``)."""
    reload = f"<meta http-equiv='refresh' content='{refresh}'>" if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><base href='{html.escape(base)}'>"
        f"<title>{html.escape(title)}</title>{reload}<style>{STYLE}</style></head>"
        "<body><nav><a href='./'>Overview</a><a href='workers'>Workers</a>"
        "<a href='dead-letters'>Dead letters</a></nav>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()
