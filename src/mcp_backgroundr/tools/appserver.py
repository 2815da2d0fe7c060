"""The MCPServer the tools are served by: it takes arguments as clients send them, refuses
names a tool does not take, and answers every failure in one actionable line.

Arguments are normalized against each tool's input schema (see ``arguments``) before the
SDK validates them; a validation error becomes one line naming each field, its value as
JSON and what was wrong. Lines on stdin that are not JSON-RPC get the error JSON-RPC
prescribes (see ``wire``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, GetPromptResult, InputRequiredResult, ToolAnnotations
from mcp_types import Resource as MCPResource
from pydantic import AnyUrl, ValidationError

from .. import __version__
from ..errors import BackgroundrError, first_control, printable, shown_value
from ..models import one_line
from . import draining, pipes, sdk, threaded, wire
from .arguments import hint, normalized, simple_schema
from .schemas import cheap_to_validate, rows_described

_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|list|dict|[a-z-]+\[.*\])$")
"""How pydantic names the member of a union in an error's location (``str``, ``list[str]``)."""


_JSON_TERMS = {"a valid dictionary": 'an object, like {"NAME": "value"}', "a valid list": "an array"}
"""pydantic's Python words for what a client sends as JSON."""


def _in_json_terms(message: str) -> str:
    for python, json_term in _JSON_TERMS.items():
        message = message.replace(python, json_term)
    return message


def _one_line_validation_error(tool: str, error: ValidationError) -> str:
    problems: dict[str, list[str]] = {}
    for item in error.errors():
        path = [str(part) for part in item["loc"] if not _UNION_MEMBER.match(str(part))]
        value = "" if item["type"] == "missing" else "=" + shown_value(item.get("input"), SHOWN_NAME)
        messages = problems.setdefault(f"{'.'.join(path) or 'arguments'}{value}", [])
        message = _in_json_terms(item["msg"])
        messages.append(message if not messages else message.removeprefix("Input should be "))
    joined = [f"{where}: {' or '.join(messages)}" for where, messages in problems.items()]
    return f"{tool}: invalid arguments: " + "; ".join(joined) + "; fix them and call again"


CRASHED = "failed unexpectedly"
DRAIN_SECONDS = 1.0
"""How long requests in flight when stdin ends get to be answered, by default (``draining``)."""
SHOWN_NAME = 60
"""How much of a name, URI or value of the client's a refusal shows (a name the server does not
know, a value a validation error names)."""
UNKNOWN_RESOURCE = "Unknown resource: "
SHOWN_UNKNOWN = 10
"""How many of the names a tool does not take its refusal names."""


def crash_answer(tool: str) -> str:
    """The one line a client gets when a tool call met a defect of this server."""
    return (
        f"{tool} {CRASHED} (a defect of this server; the details are on its stderr); the server "
        "goes on: check list_tasks or get_task_status for what was done, then try again"
    )


CONTEXT_PARAMETER = "ctx"
_ToolFunction = TypeVar("_ToolFunction", bound=Callable[..., Any])
Bounds = Callable[[Mapping[str, object]], None]
"""Refuses a tool's arguments, as the client sent them, by their length alone (raises BackgroundrError)."""


class BackgroundrMCPServer(MCPServer[Any]):
    """MCPServer whose tool errors are always one actionable line, and which refuses
    arguments a tool does not take instead of silently ignoring them."""

    def __init__(
        self,
        instructions: str,
        bus: SubscriptionBus,
        auth: AuthSettings | None = None,
        token_verifier: TokenVerifier | None = None,
        dynamic_resources: Callable[[], list[MCPResource]] = list,
    ) -> None:
        """``dynamic_resources`` lists the concrete resources beside the registered ones (each
        task's log)."""
        super().__init__(
            "mcp-backgroundr",
            version=__version__,
            instructions=instructions,
            log_level="WARNING",
            subscriptions=bus,
            auth=auth,
            token_verifier=token_verifier,
        )
        self.middleware.append(wire.said_plainly)
        self._parameters: dict[str, frozenset[str]] = {}
        self._schemas: dict[str, dict[str, Any]] = {}
        self._bounds: dict[str, Bounds] = {}
        self._dynamic_resources = dynamic_resources
        self.stdio_leaving = pipes.Leaving()
        """Once stdio serving has returned: how it ended (see ``pipes.Leaving``)."""

    async def list_resources(self) -> list[MCPResource]:
        return [*await super().list_resources(), *self._dynamic_resources()]

    def background_tool(
        self, annotations: ToolAnnotations, rows: str | None = None, bounds: Bounds | None = None
    ) -> Callable[[_ToolFunction], _ToolFunction]:
        """Register a tool; its docstring, dedented, is its description. ``rows``: the array of its
        answer whose rows the output schema describes without checking them (``rows_described``), an answer
        the SDK then does not check again against the tool's model. ``bounds`` refuses its arguments
        by their length alone, before anything reads them item by item."""

        def register(function: _ToolFunction) -> _ToolFunction:
            self.add_tool(function, description=inspect.getdoc(function), annotations=annotations)
            tool = sdk.registered_tool(self, function.__name__)
            tool.parameters = self._schemas[function.__name__] = simple_schema(tool.parameters)
            if (output := tool.fn_metadata.output_schema) is not None:
                output = cheap_to_validate(output)
                tool.fn_metadata.output_schema = rows_described(output, rows) if rows else output
            if rows:
                # The SDK checks an answer against the tool's model only when it has one: a list of
                # 100 is built straight from typed plain data (tools/answers.listing_answer), and
                # tests/test_answers.py proves every such answer matches the published schema.
                tool.fn_metadata.output_model = None
            if bounds is not None:
                self._bounds[function.__name__] = bounds
            parameters = inspect.signature(function).parameters
            self._parameters[function.__name__] = frozenset(name for name in parameters if name != CONTEXT_PARAMETER)
            return function

        return register

    def _check_argument_names(self, name: str, given: dict[str, Any]) -> None:
        known = self._parameters.get(name)
        unknown = sorted(set(given) - known) if known is not None else []
        if not unknown or known is None:
            return
        # The names are the client's: the first few are shown, each cut as a value is.
        shown = {u: one_line(u, SHOWN_NAME) for u in unknown[:SHOWN_UNKNOWN]}
        hints = [f"{shown[u]} -> {meant}" for u in shown if (meant := hint(u, known))]
        advice = f" (did you mean {', '.join(hints)}?)" if hints else ""
        more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
        names = ", ".join(shown.values()) + more
        raise ToolError(f"{name}: unknown argument {names}{advice}; it takes {', '.join(sorted(known))}")

    async def run_stdio_async(
        self, when_input_ends: Callable[[], None] = lambda: None, drain_seconds: float = DRAIN_SECONDS
    ) -> None:
        """Serve on stdio like the SDK, on the event loop when stdin and stdout are pipes (see
        ``pipes``), else through the SDK's transport (see ``threaded``), and answer lines that are
        not JSON-RPC (see ``wire``), and the requests read before stdin ended (see ``draining``);
        ``when_input_ends`` is told once the client has ended stdin or stopped reading stdout, and
        requests in flight then get ``drain_seconds`` to be answered;
        ``stdio_leaving`` then says how it ended."""
        streams = pipes.stdio_streams if pipes.event_loop_can_serve() else threaded.stdio_streams
        async with streams() as (read_stream, write_stream, leaving):
            await sdk.serve_streams(
                self, *draining.answered_before_leaving(read_stream, write_stream, when_input_ends, drain_seconds)
            )
        self.stdio_leaving = leaving

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Context[Any, Any] | None = None
    ) -> GetPromptResult | InputRequiredResult:
        """An unknown prompt is the client's mistake (invalid params), not an internal error."""
        if name not in {prompt.name for prompt in await self.list_prompts()}:
            message = f"Unknown prompt: {one_line(name, SHOWN_NAME)}; prompts/list shows the prompts"
            raise MCPError(code=INVALID_PARAMS, message=message)
        return await super().get_prompt(name, arguments, context)

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        """A URI no resource has is refused as the SDK refuses it, but cut and its control characters
        escaped: the SDK repeats it whole, however long (a 20 MB URI got a 20 MB answer)."""
        try:
            return await super().read_resource(uri, context)
        except ResourceNotFoundError as exc:
            shown_whole = len(text := str(uri)) <= SHOWN_NAME and first_control(text) is None
            if shown_whole or not str(exc).startswith(UNKNOWN_RESOURCE):
                raise
            advice = "resources/list and resources/templates/list show the URIs"
            raise ResourceNotFoundError(f"{UNKNOWN_RESOURCE}{one_line(text, SHOWN_NAME)}; {advice}") from exc

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        if name not in self._parameters:
            # The SDK's refusal repeats the name whole, however long the client made it.
            raise ToolError(f"Unknown tool: {one_line(name, SHOWN_NAME)}; tools/list shows the tools")
        self._check_argument_names(name, arguments)
        schema = self._schemas.get(name)
        try:
            if (bounds := self._bounds.get(name)) is not None:
                bounds(arguments)
        except BackgroundrError as exc:
            raise ToolError(printable(str(exc))) from exc  # the line the same refusal gets after validation
        try:
            arguments = normalized(schema, arguments) if schema else arguments
        except BackgroundrError as exc:
            raise ToolError(printable(f"{name}: {exc}")) from exc
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            # The SDK's documented contract (Tool.run): every failure but MCPError is raised as a
            # ToolError whose message starts "Error executing tool <name>" and whose __cause__ is
            # what was raised. Ours become their own one line; a crash says what to do, and its
            # text stays on the server (its stderr), as the SDK keeps it.
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(_one_line_validation_error(name, cause)) from exc
            if isinstance(cause, BackgroundrError):
                raise ToolError(printable(str(cause))) from exc
            if isinstance(exc, UnexpectedToolError):
                raise UnexpectedToolError(crash_answer(name)) from exc
            raise
