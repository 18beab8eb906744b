"""What an MCP tool call returned, as the tool result a model reads and the journal keeps.

Structured content (a JSON value the tool's output schema describes) is returned as it is;
otherwise the content blocks become text: text blocks as they are, an embedded text
resource as its text under its URI, and binary content (images, audio, blobs) summarised
(type, MIME type, size), never inlined: base64 in a model's context costs tokens and says
nothing, and the journal would keep every copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mcp_types as types


def tool_result(result: types.CallToolResult) -> Any:
    """The JSON a successful call gives the step (and the journal keeps)."""
    if result.structured_content is not None:
        return result.structured_content
    return content_text(result.content)


def content_text(blocks: Sequence[types.ContentBlock]) -> str:
    """The content blocks as one text, binary parts summarised."""
    return "\n".join(_block(b) for b in blocks)


def _block(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind} {block.mime_type}, {_size(block.data)} bytes, not shown]"
    if isinstance(block, types.ResourceLink):
        named = f" ({block.name})" if block.name else ""
        return f"[resource link {block.uri}{named}]"
    if isinstance(block, types.EmbeddedResource):
        res = block.resource
        if isinstance(res, types.TextResourceContents):
            return f"[resource {res.uri}]\n{res.text}"
        return f"[resource {res.uri} {res.mime_type or 'binary'}, {_size(res.blob)} bytes, not shown]"
    return f"[{getattr(block, 'type', 'unknown')} content, not shown]"


def _size(b64: str) -> int:
    """Decoded size of base64 text, without decoding it."""
    body = b64.strip()
    return max(0, len(body) * 3 // 4 - body[-2:].count("="))
