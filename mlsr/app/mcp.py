"""The app's MCP tools answer JSON that an agent can parse: structured content with an output schema per tool.

Gradio's MCP server (6.31) writes a tool's dict answer as a Python literal (`{'text': ...}`, which `json.loads`
refuses) and lists no output schema. `structure_answers` adjusts the running server, after launch: every dict
answer becomes JSON text plus the same object as `structuredContent`, each tool lists its `outputSchema`
(`_OUTPUT_SCHEMAS`), and each hit's `image` (the app's own `thumbnails/<id>`) becomes absolute on the app's origin
as the agent reached it. Nothing else of Gradio's server changes; a new Gradio version that moves these hooks
makes the app's MCP tests fail, not its answers wrong.

The image tools take the image itself, as a data: URI. Gradio lists a file input as a "url" string that still
requires FileData's fields and answers any other string with "provide a url", which invites a URL the app refuses
(`mlsr.app.uploads`): each image input is listed as what it accepts, and anything else is refused in one message
before Gradio sees it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mlsr.serving.pictures import THUMBNAIL_ROUTE

logger = logging.getLogger(__name__)

_NUMBER, _INT, _TEXT = {"type": "number"}, {"type": "integer"}, {"type": "string"}
_TERMS = {"type": "array", "items": {"type": "array", "prefixItems": [_TEXT, _NUMBER], "minItems": 2, "maxItems": 2}}
_TIMINGS = {"type": "object", "additionalProperties": _NUMBER}
_HIT = {"type": "object", "required": ["rank", "id", "score", "image", "caption", "source"],
        "properties": {"rank": _INT, "row": _INT, "id": _TEXT, "score": _NUMBER, "caption": _TEXT,
                       "image": {"type": ["string", "null"], "description": "the picture's URL, on the app's origin"},
                       "source": {"type": ["string", "null"], "description": "the original's URL, for a link"},
                       "credit": {"type": "string", "description": "title, author, source and licence, to show"},
                       "license": _TEXT, "license_url": _TEXT, "terms": _TERMS}}
_HITS = {"type": "array", "items": _HIT}


def _answer(required: dict[str, Any]) -> dict:
    return {"type": "object", "required": list(required), "properties": required}


_OUTPUT_SCHEMAS: dict[str, dict] = {
    "suggest": _answer({"results": _HITS, "query_terms": _TERMS, "expansion_terms": _TERMS, "active_terms": _INT,
                        "timings_ms": _TIMINGS}),
    "suggest_article": _answer({"sections": {"type": "array", "items": _answer(
        {"title": _TEXT, "query": _TEXT, "results": _HITS})}}),
    "search_terms": _answer({"results": _HITS, "active_terms": _INT, "timings_ms": _TIMINGS}),
    "compare": _answer({"sparse": _HITS, "dense": _HITS, "overlap_at_k": _NUMBER, "active_terms": _INT,
                        "timings_ms": _TIMINGS}),
    "image_terms": _answer({"active_terms": _INT, "terms": _TERMS, "timings_ms": _TIMINGS}),
    "similar": _answer({"similar": _HITS, "terms": _TERMS, "active_terms": _INT, "timings_ms": _TIMINGS}),
}


_IMAGE_INPUTS = {"image_terms": "image", "similar": "image"}  # tool -> its image parameter
_DATA_URI_ONLY = ("send the image itself as a data: URI (data:image/jpeg;base64,...): URLs are not fetched and"
                 " paths on the server are not read.")


def _image_input(listed: dict) -> dict:
    """An image parameter's schema as it is: a string holding a data: URI, with Gradio's description kept."""
    return {"type": "string", "pattern": "^data:", "contentMediaType": "image/*",
            "description": listed.get("description") or _DATA_URI_ONLY}


def _on_origin(value: Any, root_url: str) -> Any:
    """A copy of a JSON answer whose hits' `image` paths (`thumbnails/<id>`) are absolute URLs on `root_url`."""
    if isinstance(value, dict):
        return {key: (f"{root_url.rstrip('/')}/{inner}" if key == "image" and isinstance(inner, str)
                      and inner.startswith(THUMBNAIL_ROUTE + "/") else _on_origin(inner, root_url))
                for key, inner in value.items()}
    if isinstance(value, list):
        return [_on_origin(inner, root_url) for inner in value]
    return value


def structure_answers(demo) -> None:
    """Make the launched app's MCP tools answer JSON with output schemas (see the module doc); no MCP, no change."""
    server = getattr(demo, "mcp_server_obj", None)
    if server is None:
        return
    types, low = server.types, server.mcp_server
    postprocess = server.postprocess_output_data

    def as_json(data, root_url):
        if len(data) == 1 and isinstance(data[0], dict):
            return [types.TextContent(type="text", text=json.dumps(_on_origin(data[0], root_url), ensure_ascii=False))]
        return postprocess(data, root_url)

    server.postprocess_output_data = as_json
    list_tools, call_tool = low.request_handlers[types.ListToolsRequest], low.request_handlers[types.CallToolRequest]

    async def listed(request):
        result = await list_tools(request)
        for tool in result.root.tools:
            tool.outputSchema = _OUTPUT_SCHEMAS.get(tool.name, tool.outputSchema)
            if tool.name in _IMAGE_INPUTS:
                properties = tool.inputSchema["properties"]
                properties[_IMAGE_INPUTS[tool.name]] = _image_input(properties[_IMAGE_INPUTS[tool.name]])
        return result

    async def called(request):
        image = (request.params.arguments or {}).get(_IMAGE_INPUTS.get(request.params.name, ""))
        if isinstance(image, str) and not image.startswith("data:"):  # a URL or a server path: nothing is opened
            logger.warning("refused %s: %s", request.params.name, _DATA_URI_ONLY)
            return types.ServerResult(types.CallToolResult(
                content=[types.TextContent(type="text", text=_DATA_URI_ONLY)], isError=True))
        result = await call_tool(request)
        answer = result.root
        if (request.params.name in _OUTPUT_SCHEMAS and isinstance(answer, types.CallToolResult) and not answer.isError
                and len(answer.content) == 1 and answer.content[0].type == "text"):
            answer.structuredContent = json.loads(answer.content[0].text)
        return result

    low.request_handlers[types.ListToolsRequest] = listed
    low.request_handlers[types.CallToolRequest] = called
