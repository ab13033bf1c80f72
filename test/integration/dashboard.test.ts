import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { faultStdio } from "../helpers/mcp.js";
import { ROOT } from "../helpers/paths.js";
import { startStack, type Stack } from "../helpers/toolbus.js";

interface Dashboard {
  panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
  templating: { list: Array<{ query: string }> };
}

const dashboard = JSON.parse(readFileSync(join(ROOT, "deploy/grafana/toolbus.json"), "utf8")) as Dashboard;

/** The metric families a query reads (a histogram's _bucket, _sum and _count are its family). */
function familiesOf(expr: string): string[] {
  // Label names (in matchers and in by/ignoring clauses) are not metrics.
  const bare = expr.replace(/\{[^}]*\}/g, "").replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  const names = bare.match(/\b(?:toolbus|gen_ai|process)_[a-z0-9_]+/g) ?? [];
  return names.map((n) => n.replace(/_(bucket|sum|count)$/, ""));
}

describe("the Grafana dashboard (deploy/grafana/toolbus.json) against a running toolbus's /metrics", () => {
  let stack: Stack;
  let metrics: string;

  beforeAll(async () => {
    stack = await startStack({ admin: { port: 0 }, backends: { fault: faultStdio() } });
    await stack.client.callTool("fault", "echo", { message: "x" });
    // Straight to the caller (the router would answer it itself): a name the backend does not list.
    await expect(stack.client.callTool("fault", "no-such-tool", {}, { direct: true })).rejects.toMatchObject({ code: "UNKNOWN_TOOL" });
    metrics = await (await fetch(`http://127.0.0.1:${stack.toolbus.adminPort}/metrics`)).text();
  });
  afterAll(async () => {
    await stack?.[Symbol.asyncDispose]();
  });

  it("queries only metrics the workers expose", () => {
    const queries = [...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)), ...dashboard.templating.list.map((v) => v.query)];
    const families = [...new Set(queries.flatMap(familiesOf))].sort();
    expect(families.length).toBeGreaterThan(10);
    const missing = families.filter((f) => !new RegExp(`^# TYPE ${f} `, "m").test(metrics));
    expect(missing).toEqual([]);
  });

  it("has what an operator looks at: tool latency quantiles, outcomes, breakers, health, cache, chat-log lag, LLM tokens", () => {
    const all = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)).join("\n");
    for (const q of ["0.5", "0.95", "0.99"]) expect(all).toContain(`histogram_quantile(${q}, sum by (le, backend, tool)`);
    for (const family of [
      "toolbus_requests_total",
      "toolbus_breaker_state",
      "toolbus_health_state",
      "toolbus_cache_lookups_total",
      "toolbus_chat_pending",
      "gen_ai_client_token_usage",
    ]) {
      expect(all).toContain(family);
    }
  });

  it("the caller reports latency per tool (an unknown tool as `other`) and every breaker from the start", () => {
    expect(metrics).toMatch(/^toolbus_tool_call_duration_seconds_count\{backend="fault",tool="echo"\} 1$/m);
    expect(metrics).toMatch(/^toolbus_tool_call_duration_seconds_count\{backend="fault",tool="other"\} 1$/m);
    expect(metrics).toMatch(/^toolbus_breaker_state\{backend="fault",endpoint="fault#0"\} 0$/m);
  });
});
