"""MCP tools: thin adapters from tool calls to the supervisor.

Each tool answers with structured content (its pydantic model) and a short
text for people and models. Expected failures become a one-line ``isError``
answer naming the field, the value and what to do; nothing else can reach the
client, and no tool call can stop the server.
"""

import dataclasses
from typing import Annotated, Any, Literal

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated
from mcp_types import CallToolResult, ToolAnnotations
from mcp_types import Resource as MCPResource
from pydantic import Field

from ..config import Settings
from ..core.requests import bound_start
from ..core.supervisor import ReadRequest, StartRequest, Supervisor, TaskChange, Waited, WaitRequest
from ..core.validation import WaitConditions
from ..core.watch import ProgressReporter
from ..errors import BackgroundrError, json_value, plain_number
from ..logs.patterns import PATTERN_LIMIT_NOTE
from ..models import (
    SHOWN_COMMAND_LENGTH,
    EndedTask,
    InputSent,
    RemovedTask,
    StartedTask,
    TaskList,
    TaskState,
    TaskStatus,
    WaitReason,
    WaitResult,
    one_line,
    shown_command,
)
from ..results import output_away
from .answers import (
    MAX_LISTED,
    answer,
    describe_end,
    describe_list,
    describe_status,
    describe_wait,
    listing_answer,
    model_of,
)
from .appserver import BackgroundrMCPServer as BackgroundrMCPServer

INSTRUCTIONS = """\
Runs shell commands in the background: dev servers, language servers, watchers, builds, tests.
1. run_background_task answers at once with a task_id; with wait_for_pattern or wait_for_port it \
answers when a server is ready, or has died (with its output).
2. wait_for_task blocks until the task exits, prints a matching line or opens a port: no polling.
3. get_task_status: state, exit code, latest output; pass `cursor` back as `since` to read only \
new output. `grep` searches a big log.
4. end_background_task stops the whole process tree.
send_task_input types into tasks started with stdin or pty. Answers carry at most about 16 KiB of \
output. Tasks end when the server exits, unless keep_running."""

DEFAULT_LISTED = 50


def _has_progress_token(ctx: Context[Any, Any] | None) -> bool:
    """Whether the client asked for progress on this request, and so keeps it alive while it lasts."""
    try:
        meta = ctx.request_context.meta if ctx is not None else None
    except ValueError:  # no request: called from outside one
        return False
    return meta is not None and meta.get("progress_token") is not None


def _progress_reporter(ctx: Context[Any, Any] | None, doing: str = "waiting") -> ProgressReporter | None:
    """What tells the client how a long call goes, when it asked (a progress token); None otherwise,
    so that a call nobody follows does not wake every PROGRESS_INTERVAL_SECONDS to say nothing."""
    if ctx is None or not _has_progress_token(ctx):
        return None

    async def report(waited: float, limit: float) -> None:
        await ctx.report_progress(waited, limit, f"{doing} ({waited:g}s of {limit:g}s)")

    return report


TaskId = Annotated[str, Field(description="From run_background_task or list_tasks.")]
Command = Annotated[
    str | list[str], Field(description="Shell command for /bin/sh -c (pipes, &&, $VARS work), or an argv list.")
]
Cwd = Annotated[str | None, Field(description="Working directory (default, and base of a relative one: the server's).")]
Env = Annotated[
    dict[str, str | None] | None,
    Field(description="Variables added to the server's environment (null unsets one)."),
]
Name = Annotated[str | None, Field(description="A short one-line label (no control characters).")]
Stdin = Annotated[bool, Field(description="Keep its stdin open for send_task_input (else /dev/null).")]
Pty = Annotated[
    bool, Field(description="Run it in a pseudo-terminal (REPLs, programs that need a terminal); takes input.")
]
KeepRunning = Annotated[
    bool,
    Field(
        description="Survive this server's exit; the next server adopts it (same task_id). Refused with pty: "
        "the server holds a pty task's terminal, which hangs up when it exits (stdin=true takes input instead)."
    ),
]
Restart = Annotated[
    Literal["no", "on-failure", "always"],
    Field(description="Restart it when it exits (on-failure: non-zero exit), with backoff."),
]
MaxRuntime = Annotated[
    float | None, Field(description="End it after this many seconds (default and maximum: the server's policy).")
]
MaxMemory = Annotated[
    int | None,
    Field(
        description="Memory its processes may use together, enforced by its cgroup: past it the kernel "
        "kills it and it is failed with that reason. Needs cgroup containment; default: the policy's."
    ),
]
MaxProcesses = Annotated[
    int | None,
    Field(
        description="Processes it may have at once, enforced by its cgroup (a fork bomb stops there). "
        "Needs cgroup containment; default: the policy's."
    ),
]
WaitForPattern = Annotated[
    str | None,
    Field(description=f"Regex: answer once an output line matches (e.g. 'Listening on'); {PATTERN_LIMIT_NOTE}."),
]
WaitForPort = Annotated[
    int | None,
    Field(
        description="Answer once a process of the task listens on this TCP port, on any local address (seen in "
        "the socket table: the port is never connected to), even after the shell exits (`server &`)."
    ),
]
Host = Annotated[
    str | None,
    Field(
        description="Run it on this SSH host (a ~/.ssh/config alias or user@name[:port]) if the policy's "
        "allowed_hosts has it; cwd is then there (default: the remote home)."
    ),
]
Since = Annotated[int | None, Field(description="A `cursor` from an earlier answer: return what was written after it.")]
Grep = Annotated[
    str | None,
    Field(description=f"Regex: only the matching lines (after `since`), as `LINE: text`; {PATTERN_LIMIT_NOTE}."),
]
Raw = Annotated[bool, Field(description="Keep ANSI escape sequences (also in `grep`'s lines, matched without them).")]
OutputPattern = Annotated[
    str | None,
    Field(description=f"Regex for a new output line (after the call, or `since`); {PATTERN_LIMIT_NOTE}."),
]
Port = Annotated[
    int | None,
    Field(description="A TCP port to wait for a process of the task to listen on, on any local address."),
]
WaitSince = Annotated[int | None, Field(description="A cursor: match lines written after it.")]
Text = Annotated[str, Field(description="Text to write.")]
Newline = Annotated[bool, Field(description="Press Enter after it.")]
Close = Annotated[bool, Field(description="Then close its input (end of input).")]
StateFilter = Annotated[
    TaskState | None,
    Field(
        description="Only tasks in this state; running includes finished tasks whose processes still run "
        "(`lingering`, e.g. a `server &`)."
    ),
]
Everyone = Annotated[bool, Field(description="Also other servers' tasks.")]
Limit = Annotated[int, Field(ge=1, le=MAX_LISTED, description="Most tasks listed.")]


def log_uri(task_id: str) -> str:
    return f"task://{task_id}/log"


class ChangeNotices:
    """Tells subscribed clients when tasks start, end or go: made before the supervisor, which
    takes :meth:`publish` as its change hook, and handed to the server, which serves the bus."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()

    async def publish(self, change: TaskChange, task_id: str) -> None:
        if change is TaskChange.ENDED:
            await self.bus.publish(ResourceUpdated(uri=log_uri(task_id)))
        await self.bus.publish(ResourcesListChanged())


def build_server(
    supervisor: Supervisor,
    notices: ChangeNotices,
    auth: AuthSettings | None = None,
    token_verifier: TokenVerifier | None = None,
) -> BackgroundrMCPServer:
    """The MCP server with its tools and resources bound to ``supervisor``; ``notices`` is the
    supervisor's change hook; over HTTP, ``auth`` and ``token_verifier`` decide who may call it."""

    def task_logs() -> list[MCPResource]:
        return [
            MCPResource(
                uri=log_uri(record.task_id),
                name=f"task {record.task_id} log",
                description=f"Output of: {one_line(shown_command(record.command, record.task_id))}",
                mime_type="text/plain",
            )
            for record in supervisor.own_records()
        ]

    app = BackgroundrMCPServer(INSTRUCTIONS, notices.bus, auth, token_verifier, dynamic_resources=task_logs)
    _add_resources(app, supervisor)
    _add_run_tool(app, supervisor)
    _add_read_tools(app, supervisor)
    _add_act_tools(app, supervisor)
    return app


def _add_resources(app: BackgroundrMCPServer, supervisor: Supervisor) -> None:
    @app.resource(
        "task://{task_id}/log",
        name="task-log",
        description="The latest output of a task (bounded, like get_task_status).",
        mime_type="text/plain",
    )
    async def task_log(task_id: str) -> str:
        try:
            status = await supervisor.read(task_id)
        except BackgroundrError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        if status.host_reachable is False:  # its output is on that host: none is not what it wrote
            raise ResourceError(output_away(status))
        note = f"\n[{status.truncation}]" if status.truncation else ""
        return status.output + note

    @app.resource(
        "task://{task_id}/command",
        name="task-command",
        description="The whole command of a task, as given (answers show at most its first "
        f"{SHOWN_COMMAND_LENGTH} characters).",
        mime_type="text/plain",
    )
    async def task_command(task_id: str) -> str:
        try:
            return await supervisor.command(task_id)
        except BackgroundrError as exc:
            raise ResourceNotFoundError(str(exc)) from exc


def _unattended(settings: Settings) -> str:
    return (
        f"Without a progress token it answers within {settings.unattended_wait_seconds:g}s (see `advice`); "
        "with one it waits it all, sending progress."
    )


def _unattended_bound(supervisor: Supervisor, ctx: Context[Any, Any] | None) -> float | None:
    """How long a call may run before it answers, so as to beat the client's request timeout: None
    when the client sent a progress token (progress keeps the request alive)."""
    return None if _has_progress_token(ctx) else supervisor.settings.unattended_wait_seconds


async def _bounded_wait(
    supervisor: Supervisor, task_id: str, conditions: WaitConditions, since: int | None, ctx: Context[Any, Any] | None
) -> WaitResult:
    """A wait that answers before the client's request timeout unless progress keeps it alive."""
    cap = _unattended_bound(supervisor, ctx)
    bounded = conditions if cap is None or conditions.timeout <= cap else dataclasses.replace(conditions, timeout=cap)
    capped = bounded is not conditions
    result = await supervisor.wait(task_id, bounded, since=since, progress=_progress_reporter(ctx))
    if capped and result.reason is WaitReason.TIMEOUT:
        advice = (
            f"stopped after {cap:g}s of the {conditions.timeout:g}s asked, to answer before the client's "
            f"request timeout (no progress token was sent); {_wait_again(task_id, conditions, result)} to go on waiting"
        )
        result = dataclasses.replace(result, advice=advice)
    return model_of(WaitResult, result)


def _wait_again(task_id: str, conditions: WaitConditions, result: Waited) -> str:
    """The call that goes on with a wait cut short: each of its conditions again, from where it stopped,
    for the rest of its time. A pattern is given as JSON, whole."""
    pattern = "" if conditions.pattern is None else f"output_pattern={json_value(conditions.pattern.pattern)} "
    port = "" if conditions.port is None else f"port={conditions.port} "
    rest = max(0.0, round(conditions.timeout - result.waited_seconds, 1))
    return (
        f"call wait_for_task with task_id={task_id} {pattern}{port}since={result.status.cursor} "
        f"timeout_seconds={plain_number(rest)}"
    )


def _add_run_tool(app: BackgroundrMCPServer, supervisor: Supervisor) -> None:
    settings = supervisor.settings
    MaxRestarts = Annotated[int | None, Field(description=f"Most restarts (default {settings.default_max_restarts}).")]
    MaxLogBytes = Annotated[
        int | None,
        Field(description=f"Disk its log may take (default {settings.max_log_bytes}); the oldest output goes."),
    ]
    WaitTimeout = Annotated[
        float | None,
        Field(
            description=f"Longest wait for them (default {settings.default_wait_seconds:g}, at most "
            f"{settings.max_wait_seconds:g}). {_unattended(settings)}"
        ),
    ]

    @app.background_tool(
        ToolAnnotations(
            title="Run a command in the background", read_only_hint=False, destructive_hint=False, open_world_hint=True
        ),
        bounds=bound_start,
    )
    async def run_background_task(
        command: Command,
        cwd: Cwd = None,
        env: Env = None,
        name: Name = None,
        stdin: Stdin = False,
        pty: Pty = False,
        keep_running: KeepRunning = False,
        restart: Restart = "no",
        max_restarts: MaxRestarts = None,
        max_log_bytes: MaxLogBytes = None,
        max_runtime_seconds: MaxRuntime = None,
        max_memory_bytes: MaxMemory = None,
        max_processes: MaxProcesses = None,
        wait_for_pattern: WaitForPattern = None,
        wait_for_port: WaitForPort = None,
        host: Host = None,
        wait_timeout_seconds: WaitTimeout = None,
        ctx: Context[Any, Any] | None = None,
    ) -> Annotated[CallToolResult, StartedTask]:
        """Start a command in the background (dev server, language server, watcher, build, tests)
        and answer with its task_id. Output goes to a log. With wait_for_pattern or
        wait_for_port it answers once ready, or dead with its last output."""
        request = StartRequest(
            command, cwd, env, name, stdin, pty, keep_running, restart, max_restarts, max_log_bytes,
            max_runtime_seconds, max_memory_bytes, max_processes, host, wait_for_pattern, wait_for_port,
            wait_timeout_seconds,
        )  # fmt: skip
        plan = supervisor.check_start(request)
        started = model_of(StartedTask, await supervisor.start(plan))
        if plan.wait is not None:
            started.wait = await _bounded_wait(supervisor, started.task_id, plan.wait, 0, ctx)
            started.state = started.wait.status.state
        where = f"{started.host}:{started.cwd}" if started.host else started.cwd
        text = f"started task {started.task_id} pid={started.pid} [{started.state}] in {one_line(where)}: "
        text += one_line(started.command)
        return answer(started, text + ("\n" + describe_wait(started.wait) if started.wait else ""))


def _add_read_tools(app: BackgroundrMCPServer, supervisor: Supervisor) -> None:
    settings = supervisor.settings
    Lines = Annotated[
        int | None,
        Field(
            description=f"Last lines to return (0 to {settings.max_lines}; default {settings.default_lines}), "
            "unless `since` is given; with `grep`, the last N matching lines (default: the first that fit)."
        ),
    ]
    Timeout = Annotated[
        float,
        Field(description=f"Longest wait, 0 to {settings.max_wait_seconds:g} seconds. {_unattended(settings)}"),
    ]

    @app.background_tool(
        ToolAnnotations(title="Status and output of a task", read_only_hint=True, idempotent_hint=True)
    )
    async def get_task_status(
        task_id: TaskId, lines: Lines = None, since: Since = None, grep: Grep = None, raw: Raw = False
    ) -> Annotated[CallToolResult, TaskStatus]:
        """State, exit code and output of a task: the last `lines` lines, or exactly what was
        written after `since` (pass each answer's `cursor` to follow it). At most about 16 KiB;
        `truncated` says what was left out."""
        status = model_of(TaskStatus, await supervisor.read(task_id, ReadRequest(lines, since, grep, raw)))
        return answer(status, describe_status(status))

    @app.background_tool(
        ToolAnnotations(title="Wait for a task to be ready or to end", read_only_hint=True, idempotent_hint=True)
    )
    async def wait_for_task(
        task_id: TaskId,
        timeout_seconds: Timeout = settings.default_wait_seconds,
        output_pattern: OutputPattern = None,
        port: Port = None,
        since: WaitSince = None,
        ctx: Context[Any, Any] | None = None,
    ) -> Annotated[CallToolResult, WaitResult]:
        """Block until the task exits (reason `exited`), a new line matches `output_pattern`
        (`pattern`), a process of it listens on `port` (`port`) or the time is up (`timeout`); with
        `port`, exits means every process it started has ended too; answers with its status and the
        output written meanwhile."""
        conditions = supervisor.check_wait(WaitRequest(timeout_seconds, output_pattern, port))
        result = await _bounded_wait(supervisor, task_id, conditions, since, ctx)
        return answer(result, describe_wait(result))


def _add_act_tools(app: BackgroundrMCPServer, supervisor: Supervisor) -> None:
    settings = supervisor.settings
    Grace = Annotated[
        float | None,
        Field(
            description=f"Seconds from SIGTERM to SIGKILL (0 to {settings.max_grace_seconds:g}; default "
            f"{settings.default_grace_seconds:g}). Without a progress token the answer comes within "
            f"{settings.unattended_wait_seconds:g}s, the end going on past it (see `advice`); with one it "
            "comes once the task is gone, sending progress."
        ),
    ]

    @app.background_tool(
        ToolAnnotations(
            title="Stop a task and its whole process tree",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
        )
    )
    async def end_background_task(
        task_id: TaskId, grace_seconds: Grace = None, ctx: Context[Any, Any] | None = None
    ) -> Annotated[CallToolResult, EndedTask]:
        """Stop a task's whole process tree: SIGTERM, SIGKILL after the grace period; answers once
        all are gone, naming any `survivors` (or, see `advice`, while it is still ending)."""
        bound, progress = _unattended_bound(supervisor, ctx), _progress_reporter(ctx, "ending")
        ended = model_of(EndedTask, await supervisor.end(task_id, grace_seconds, bound, progress))
        return answer(ended, describe_end(ended))

    @app.background_tool(ToolAnnotations(title="Send input to a task", read_only_hint=False, destructive_hint=False))
    async def send_task_input(
        task_id: TaskId, text: Text, newline: Newline = True, close: Close = False
    ) -> Annotated[CallToolResult, InputSent]:
        """Type into a task started with stdin or pty; read the reply with wait_for_task or
        get_task_status, passing this answer's `cursor` as `since`. On a pty, "\\u0003" is Ctrl-C."""
        sent = model_of(InputSent, await supervisor.send_input(task_id, text, newline=newline, close=close))
        note = "; its stdin is now closed" if sent.closed else ""
        reply = f"; its reply starts at cursor {sent.cursor}"
        return answer(sent, f"wrote {sent.bytes_written} bytes to task {sent.task_id}{note}{reply}")

    @app.background_tool(ToolAnnotations(title="Forget a finished task", read_only_hint=False, destructive_hint=True))
    async def remove_task(task_id: TaskId) -> Annotated[CallToolResult, RemovedTask]:
        """Forget a finished task and delete its log."""
        removed = model_of(RemovedTask, await supervisor.remove(task_id))
        return answer(removed, f"removed task {removed.task_id}; freed {removed.freed_bytes} bytes on disk")

    @app.background_tool(ToolAnnotations(title="List tasks", read_only_hint=True, idempotent_hint=True), rows="tasks")
    async def list_tasks(
        state: StateFilter = None, all: Everyone = False, limit: Limit = DEFAULT_LISTED
    ) -> Annotated[CallToolResult, TaskList]:
        """This server's tasks (all=true: every server's), newest first."""
        listing = await supervisor.list_tasks(state, everyone=all, limit=limit)
        return listing_answer(listing, describe_list(listing, state, everyone=all))
