// Drives `op-dbus mcp` with the official TypeScript MCP SDK client and
// prints a JSON summary on stdout for the Go test to check.
//
//   node client.mjs /path/to/op-dbus [extra op-dbus args...]
//   OP_DBUS=/path/to/op-dbus node client.mjs
//
// The server inherits this process's environment (DBUS_SYSTEM_BUS_ADDRESS).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [binary = process.env.OP_DBUS, ...extra] = process.argv.slice(2);
if (!binary) {
  console.error("usage: node client.mjs /path/to/op-dbus [args...] (or set OP_DBUS)");
  process.exit(2);
}

const summary = { ok: false, steps: [] };
const step = (name, data) => summary.steps.push({ name, ...data });

const transport = new StdioClientTransport({
  command: binary,
  args: [...extra, "mcp"],
  env: process.env,
  stderr: "inherit",
});
const client = new Client({ name: "op-dbus-interop-ts", version: "1.0.0" });

function structured(res) {
  if (res.structuredContent) return res.structuredContent;
  const t = (res.content || []).find((c) => c.type === "text");
  return t ? JSON.parse(t.text) : null;
}

try {
  await client.connect(transport);
  const info = client.getServerVersion();
  summary.server = info;
  step("initialize", { server: info?.name });

  const tools = await client.listTools();
  summary.tools = tools.tools.map((t) => t.name).sort();
  step("list_tools", { count: summary.tools.length });

  const q = await client.callTool({ name: "query_state", arguments: { plugins: ["hostname"] } });
  summary.query_state = { isError: !!q.isError, result: structured(q) };
  step("query_state", { isError: !!q.isError });

  const doc = { version: 1, plugins: { hostname: { location: "interop rack" } } };
  const p = await client.callTool({ name: "plan", arguments: { document: doc } });
  const plan = p.isError ? null : structured(p);
  summary.plan = { isError: !!p.isError, plan_hash: plan?.plan_hash, in_sync: plan?.in_sync, ops: (plan?.ops || []).map((o) => o.id) };
  step("plan", { isError: !!p.isError });

  // apply must not exist on a server started without --allow-apply.
  try {
    const a = await client.callTool({ name: "apply", arguments: { plan_hash: plan?.plan_hash ?? "x" } });
    summary.apply = { refused: !!a.isError, error: a.isError ? JSON.stringify(a.content) : null };
  } catch (e) {
    summary.apply = { refused: true, code: e.code, error: String(e.message) };
  }
  step("apply", summary.apply);

  summary.ok = true;
} catch (e) {
  summary.error = String(e?.stack || e);
} finally {
  try {
    await client.close();
  } catch {}
}
console.log(JSON.stringify(summary));
process.exit(summary.ok ? 0 : 1);
