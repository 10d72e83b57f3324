"""A self-contained HTML page for an AsyncAPI document (``shipkit docs serve``): no script, no CDN.

One section per operation: its action, channel address, queue group, and the JSON schemas of its
messages and reply, pretty-printed; the shared schemas follow at the end.
"""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["render_page"]

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
h1 small { color: #666; font-weight: normal; }
section { border: 1px solid #ddd; border-radius: 6px; margin: 1rem 0; padding: .5rem 1rem; }
.action { display: inline-block; min-width: 5.5em; padding: 0 .4em; border-radius: 4px; color: #fff; }
.receive { background: #2a7ab0; } .send { background: #2e8b57; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
pre { background: #f7f7f7; padding: .5rem; overflow-x: auto; font-size: 13px; }
details summary { cursor: pointer; }
"""


def _resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local ``#/a/b`` reference (keys here never contain ``/`` or ``~``)."""
    value: Any = document
    for part in ref.removeprefix("#/").split("/"):
        value = value[part]
    return value


def _message_block(document: dict[str, Any], ref: dict[str, str], label: str) -> str:
    message = _resolve(document, ref["$ref"])
    if "$ref" in message:  # a channel's message points at components.messages
        message = _resolve(document, message["$ref"])
    parts = [f"<details><summary>{html.escape(label)}: <code>{html.escape(message.get('name', ''))}</code>"]
    if message.get("summary"):
        parts.append(f" — {html.escape(message['summary'])}")
    parts.append("</summary>")
    if "headers" in message:
        parts.append(f"<p>headers</p><pre>{html.escape(json.dumps(message['headers'], indent=2))}</pre>")
    parts.append(f"<pre>{html.escape(json.dumps(message.get('payload', {}), indent=2))}</pre></details>")
    return "".join(parts)


def _operation_section(document: dict[str, Any], key: str, operation: dict[str, Any]) -> str:
    channel = _resolve(document, operation["channel"]["$ref"])
    action = operation["action"]
    address = channel.get("address") or "(dynamic)"
    lines = [
        f'<section id="{html.escape(key)}"><h3><span class="action {action}">{action}</span> '
        f"<code>{html.escape(address)}</code></h3>",
        f"<p><b>{html.escape(key)}</b> {html.escape(operation.get('summary', ''))}</p>",
    ]
    queue = operation.get("bindings", {}).get("nats", {}).get("queue")
    if queue:
        lines.append(f"<p>queue group <code>{html.escape(queue)}</code></p>")
    lines.extend(_message_block(document, ref, "message") for ref in operation.get("messages", []))
    reply = operation.get("reply")
    if reply:
        lines.extend(_message_block(document, ref, "reply") for ref in reply.get("messages", []))
    lines.append("</section>")
    return "\n".join(lines)


def render_page(document: dict[str, Any]) -> str:
    """The HTML page of an AsyncAPI 3.0 ``document``."""
    info = document["info"]
    title = html.escape(f"{info['title']} {info['version']}")
    body = [f"<h1>{html.escape(info['title'])} <small>{html.escape(info['version'])} · AsyncAPI "]
    body.append(f"{html.escape(document['asyncapi'])}</small></h1>")
    if info.get("description"):
        body.append(f"<p>{html.escape(info['description'])}</p>")
    for name, server in document.get("servers", {}).items():
        body.append(f"<p>server {html.escape(name)}: <code>{html.escape(server['protocol'])}://")
        body.append(f"{html.escape(server['host'])}</code></p>")
    body.append('<p><a href="asyncapi.json">asyncapi.json</a></p><h2>Operations</h2>')
    body.extend(_operation_section(document, key, op) for key, op in document.get("operations", {}).items())
    body.append("<h2>Schemas</h2>")
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        body.append(f"<details><summary><code>{html.escape(name)}</code></summary>")
        body.append(f"<pre>{html.escape(json.dumps(schema, indent=2))}</pre></details>")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
