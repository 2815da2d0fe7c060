// Drive every tool of mcp-backgroundr with the official TypeScript SDK client, 1.x
// (@modelcontextprotocol/sdk) or 2.x (@modelcontextprotocol/client), over stdio or Streamable
// HTTP, as a real client would: the SDK validates every structured answer against the tool's
// output schema (both versions do once the tools are listed). Checks what issue 12 says a
// client can see: nulls, numbers for text, enum spellings, argv commands, ids, waits longer
// than the client's timeout without and with progress, and (stdio) input and removal across
// servers.
//
// Usage: node ts_client.mjs MODULES_DIR v1|v2 stdio COMMAND
//        node ts_client.mjs MODULES_DIR v1|v2 http URL TOKEN
// Prints one line per check; exits non-zero at the first that fails.

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [modulesDir, sdkVersion, transportKind, target, token] = process.argv.slice(2);
const require = createRequire(join(modulesDir, 'package.json'));

// The server under test lowers its no-progress cap (MCP_BACKGROUNDR_UNATTENDED_WAIT_SECONDS)
// and the client its request timeout, so that a wait longer than the client's timeout costs
// seconds, not minutes: the same shape as the defaults (45 s under 60 s).
const CLIENT_TIMEOUT_MS = 4000;
const LONG_WAIT_SECONDS = 6;

function sdk() {
    if (sdkVersion === 'v1') {
        const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
        const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
        const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
        return { Client, StdioClientTransport, StreamableHTTPClientTransport, call: (c, p, o) => c.callTool(p, undefined, o) };
    }
    const { Client, StreamableHTTPClientTransport } = require('@modelcontextprotocol/client');
    const { StdioClientTransport } = require('@modelcontextprotocol/client/stdio');
    return { Client, StdioClientTransport, StreamableHTTPClientTransport, call: (c, p, o) => c.callTool(p, o) };
}

const { Client, StdioClientTransport, StreamableHTTPClientTransport, call } = sdk();

async function connect() {
    const client = new Client({ name: `ts-sdk-${sdkVersion}-test`, version: '1.0.0' });
    const transport =
        transportKind === 'stdio'
            ? new StdioClientTransport({ command: target, args: [], env: process.env, stderr: 'ignore' })
            : new StreamableHTTPClientTransport(new URL(target), {
                  requestInit: { headers: { Authorization: `Bearer ${token}` } },
              });
    await client.connect(transport);
    const { tools } = await client.listTools(); // also what the SDK validates answers against
    return { client, tools };
}

function check(name, condition, detail) {
    assert.ok(condition, `${name}: ${JSON.stringify(detail)}`);
    console.log(`ok ${name}`);
}

async function tool(client, name, args, options = {}) {
    const result = await call(client, { name, arguments: args }, { timeout: CLIENT_TIMEOUT_MS, ...options });
    const text = result.content?.[0]?.text ?? '';
    if (result.isError) throw new Error(`${name}(${JSON.stringify(args)}) failed: ${text}`);
    return { ...result.structuredContent, _text: text };
}

async function refusal(client, name, args) {
    const result = await call(client, { name, arguments: args }, { timeout: CLIENT_TIMEOUT_MS });
    assert.ok(result.isError, `${name}(${JSON.stringify(args)}) did not fail`);
    return result.content[0].text;
}

function idReadsAsText(id) {
    try {
        JSON.parse(id);
        return false;
    } catch {
        return /^t[0-9a-f]{8}$/.test(id);
    }
}

async function schemas(tools) {
    check('seven tools', tools.length === 7, tools.map((t) => t.name));
    for (const t of tools) {
        const input = JSON.stringify(t.inputSchema);
        check(`${t.name} input schema is closed and inline`, t.inputSchema.additionalProperties === false && !input.includes('$ref'), input);
    }
}

async function habits(client) {
    const started = await tool(client, 'run_background_task', {
        command: 'echo "200 OK $PORT $DEBUG"; sleep 300',
        cwd: null, env: { PORT: 8000, DEBUG: true }, name: 123, stdin: null, pty: null, keep_running: null,
        restart: false, max_restarts: null, max_log_bytes: null, max_runtime_seconds: null,
        wait_for_pattern: 200, wait_for_port: null, wait_timeout_seconds: null,
    });
    check('nulls, numbers for text and restart=false are taken', started.wait.reason === 'pattern', started.wait);
    check('the first line tells the state', started._text.split('\n')[0].includes('[running]'), started._text);
    check('ids never read as numbers', idReadsAsText(started.task_id), started.task_id);
    const grepped = await tool(client, 'get_task_status', { task_id: started.task_id, grep: 200, lines: null, since: null, raw: null });
    check('grep=200 and env numbers as text', grepped.output === '1: 200 OK 8000 true', grepped.output);
    const running = await tool(client, 'list_tasks', { state: 'Running', all: null, limit: null });
    check('state=Running', running.tasks.some((t) => t.task_id === started.task_id && t.name === '123'), running.tasks);
    const argv = await tool(client, 'run_background_task', { command: ['printf', '%s|', 'two words', 7], wait_for_pattern: 'never' });
    check('argv command', argv.command === "printf '%s|' 'two words' 7" && argv.wait.status.output === 'two words|7|', argv);
    const hint = await refusal(client, 'wait_for_task', { task_id: started.task_id, timeout: 5 });
    check('unknown names are refused with the likely one', hint.includes('timeout_seconds'), hint);
    const missing = await refusal(client, 'run_background_task', { command: null });
    check('errors speak JSON', missing.includes('command=null'), missing);
    return started.task_id;
}

async function waits(client, taskId) {
    const quick = await tool(client, 'wait_for_task', { task_id: taskId, timeout_seconds: LONG_WAIT_SECONDS });
    check('a long wait without progress answers before the client times out', quick.reason === 'timeout' && quick.advice?.includes('since='), quick);
    let reports = 0;
    const full = await tool(
        client, 'wait_for_task', { task_id: taskId, timeout_seconds: LONG_WAIT_SECONDS },
        { onprogress: () => { reports += 1; }, resetTimeoutOnProgress: true },
    );
    check('with progress it waits it all', full.waited_seconds >= LONG_WAIT_SECONDS && full.advice == null && reports >= 2, { full, reports });
    const ready = await tool(
        client, 'run_background_task', { command: 'sleep 300', wait_for_port: 9, wait_timeout_seconds: LONG_WAIT_SECONDS },
    );
    check('the readiness wait is capped too', ready.wait.reason === 'timeout' && ready.wait.advice?.includes('port=9'), ready.wait);
    await tool(client, 'end_background_task', { task_id: ready.task_id, grace_seconds: 0 });
}

async function inputAndEnd(client, taskId) {
    const cat = await tool(client, 'run_background_task', { command: 'cat', stdin: true });
    const sent = await tool(client, 'send_task_input', { task_id: cat.task_id, text: 1, newline: null, close: true });
    const echoed = await tool(client, 'wait_for_task', { task_id: cat.task_id, since: sent.cursor, timeout_seconds: 20 });
    check('text=1 is written as 1', sent.bytes_written === 2 && echoed.status.output === '1\n', echoed.status);
    const ended = await tool(client, 'end_background_task', { task_id: taskId, grace_seconds: null });
    check('end', ended.state === 'killed' && ended.survivors.length === 0, ended);
    for (const id of [taskId, cat.task_id]) {
        const removed = await tool(client, 'remove_task', { task_id: id });
        check('remove', removed.task_id === id, removed);
    }
}

async function acrossServers() {
    const first = await connect();
    const cat = await tool(first.client, 'run_background_task', { command: 'cat', stdin: true, keep_running: true });
    const done = await tool(first.client, 'run_background_task', { command: 'echo earlier', wait_for_pattern: 'never' });
    await first.client.close();
    const second = await connect();
    const sent = await tool(second.client, 'send_task_input', { task_id: cat.task_id, text: 'from the next server' });
    const reply = await tool(second.client, 'wait_for_task', { task_id: cat.task_id, output_pattern: 'next', since: sent.cursor, timeout_seconds: 20 });
    check('input to a keep_running task of an earlier server', reply.matched_line === 'from the next server', reply);
    const onDisk = statSync(done.log_path).blocks * 512; // freed_bytes is the disk freed, not the size
    const removed = await tool(second.client, 'remove_task', { task_id: done.task_id });
    check('remove a task of an earlier server', removed.freed_bytes === onDisk && onDisk > 0, removed);
    await tool(second.client, 'end_background_task', { task_id: cat.task_id, grace_seconds: 0 });
    await second.client.close();
}

const { client, tools } = await connect();
try {
    await schemas(tools);
    const taskId = await habits(client);
    await waits(client, taskId);
    await inputAndEnd(client, taskId);
} finally {
    await client.close();
}
if (transportKind === 'stdio') await acrossServers();
console.log('all checks passed');
