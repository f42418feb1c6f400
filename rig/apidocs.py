"""`GET /docs`: the OpenAPI document rendered as one self-contained HTML page.

Rendered on the server from the same document `/openapi.json` serves, with no script
and nothing loaded from elsewhere (no CDN), so it works on an isolated network.
"""

import html
import json
import re
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;
color:#1d232a}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccd;margin-top:2.5rem}
code,pre{font:13px ui-monospace,monospace;background:#f3f4f7;border-radius:3px}
code{padding:0 .2em}pre{padding:.6em;overflow:auto}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #dde;padding:.25rem .5rem;
text-align:left;vertical-align:top}
.op{border:1px solid #dde;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.put,.patch{color:#b70}.delete{color:#c22}
.auth{color:#666;font-size:90%}ul.schema{margin:.2rem 0;padding-left:1.2rem}
"""


def _inline(text: str) -> str:
    """Escape, then `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _markdown(text: str) -> str:
    """The small Markdown subset the document uses: paragraphs and one table."""
    out: list[str] = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if lines and all(line.startswith("|") for line in lines):
            rows = [
                [cell.strip() for cell in line.strip("|").split("|")]
                for line in lines
                if not set(line) <= set("|-: ")
            ]
            head, *rest = rows
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            for row in rest:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/components/schemas/") else None


def schema_html(schema: Any) -> str:
    """A schema as readable HTML: types, properties (required marked), constraints."""
    if not isinstance(schema, dict) or not schema:
        return "<em>any</em>"
    name = _ref_name(schema)
    if name:
        return f'<a href="#schema-{html.escape(name)}">{html.escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(schema_html(s) for s in schema["anyOf"])
    if "allOf" in schema:
        return " &amp; ".join(schema_html(s) for s in schema["allOf"])
    if "const" in schema:
        return f"<code>{html.escape(json.dumps(schema['const']))}</code>"
    kind = schema.get("type")
    parts: list[str] = []
    if kind == "array":
        parts.append(f"array of {schema_html(schema.get('items', {}))}")
    elif kind:
        parts.append(html.escape(str(kind)))
    notes = []
    for key in ("format", "pattern", "minLength", "maxLength", "minimum", "maximum", "maxItems"):
        if key in schema:
            notes.append(f"{key} <code>{html.escape(str(schema[key]))}</code>")
    if "enum" in schema:
        values = ", ".join(html.escape(json.dumps(v)) for v in schema["enum"])
        notes.append(f"one of <code>{values}</code>")
    if notes:
        parts.append(f"({'; '.join(notes)})")
    if schema.get("description"):
        parts.append(f"— {_inline(schema['description'])}")
    properties = schema.get("properties")
    if kind == "object" and properties:
        required = set(schema.get("required", []))
        items = []
        for prop, sub in properties.items():
            mark = "" if prop in required else " <em>(optional)</em>"
            items.append(f"<li><code>{html.escape(prop)}</code>{mark}: {schema_html(sub)}</li>")
        parts.append('<ul class="schema">' + "".join(items) + "</ul>")
    elif "properties" in schema:  # a constraint on another schema's properties
        items = [
            f"<li><code>{html.escape(p)}</code>: {schema_html(s)}</li>"
            for p, s in schema["properties"].items()
        ]
        parts.append('<ul class="schema">' + "".join(items) + "</ul>")
    return " ".join(parts) or "<em>any</em>"


def _auth(operation: dict[str, Any]) -> str:
    schemes = [name for entry in operation.get("security", []) for name in entry]
    return ", ".join(schemes) or "none"


def _operation_html(path: str, method: str, op: dict[str, Any]) -> str:
    anchor = html.escape(op.get("operationId", f"{method}-{path}"))
    out = [
        f'<div class="op" id="{anchor}">',
        f'<h3><span class="method {method}">{method}</span> <code>{html.escape(path)}</code></h3>',
        f"<p>{_inline(op.get('summary', ''))}</p>",
    ]
    if op.get("description"):
        out.append(f"<p>{_inline(op['description'])}</p>")
    out.append(f'<p class="auth">Authorization: {html.escape(_auth(op))}</p>')
    if op.get("parameters"):
        out.append("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>schema</th>")
        out.append("<th>description</th></tr>")
        for param in op["parameters"]:
            out.append(
                f"<tr><td><code>{html.escape(param['name'])}</code></td>"
                f"<td>{html.escape(param['in'])}</td><td>{schema_html(param.get('schema'))}</td>"
                f"<td>{_inline(param.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    if op.get("requestBody"):
        for media, content in op["requestBody"]["content"].items():
            out.append(f"<h4>Request body <code>{html.escape(media)}</code></h4>")
            out.append(schema_html(content.get("schema")))
    out.append("<h4>Responses</h4><table><tr><th>status</th><th>description</th>")
    out.append("<th>body</th></tr>")
    for status, response in op.get("responses", {}).items():
        bodies = [
            f"<code>{html.escape(media)}</code>: {schema_html(content.get('schema'))}"
            for media, content in response.get("content", {}).items()
        ]
        out.append(
            f"<tr><td>{html.escape(status)}</td><td>{_inline(response.get('description', ''))}"
            f"</td><td>{'<br>'.join(bodies)}</td></tr>"
        )
    out.append("</table></div>")
    return "\n".join(out)


def render_html(document: dict[str, Any]) -> str:
    """The whole page."""
    info = document.get("info", {})
    title = html.escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    operations: dict[str, list[tuple[str, str, dict]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                operations.setdefault(tag, []).append((path, method, item[method]))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title} API</title><style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>{_inline(info.get('summary', ''))} — the machine-readable document is at "
        '<a href="openapi.json"><code>/openapi.json</code></a> (OpenAPI '
        f"{html.escape(document.get('openapi', ''))}).</p>",
        _markdown(info.get("description", "")),
        "<h2>Contents</h2><ul>",
    ]
    for tag, ops in operations.items():
        links = ", ".join(
            f'<a href="#{html.escape(op.get("operationId", ""))}">'
            f"{method.upper()} {html.escape(path)}</a>"
            for path, method, op in ops
        )
        out.append(f"<li><strong>{html.escape(tag)}</strong>: {links}</li>")
    out.append('<li><a href="#schemas">schemas</a></li></ul>')
    descriptions = {t["name"]: t.get("description", "") for t in document.get("tags", [])}
    for tag, ops in operations.items():
        out.append(f"<h2>{html.escape(tag)}</h2><p>{_inline(descriptions.get(tag, ''))}</p>")
        out.extend(_operation_html(path, method, op) for path, method, op in ops)
    components = document.get("components", {})
    out.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in components.get("schemas", {}).items():
        out.append(f'<h3 id="schema-{html.escape(name)}">{html.escape(name)}</h3>')
        out.append(f"<p>{schema_html(schema)}</p>")
    out.append("<h2>Security schemes</h2><ul>")
    for name, scheme in components.get("securitySchemes", {}).items():
        out.append(
            f"<li><code>{html.escape(name)}</code>: HTTP {html.escape(scheme.get('scheme', ''))}"
            f" ({html.escape(scheme.get('bearerFormat', ''))}) —"
            f" {_inline(scheme.get('description', ''))}</li>"
        )
    out.append("</ul></body></html>")
    return "\n".join(out)
