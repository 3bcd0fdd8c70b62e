/**
 * The LLM plane's promises over real HTTP, against stub OpenAI and Anthropic servers on loopback:
 * fallback chains and what the headers say, no retry once a stream has started, the provider breaker
 * (open → no upstream call → half-open → closed, listed and reset through the admin API), budget
 * exactness under concurrency, the cache (hit, miss, bypass, stream replay, never across tenants,
 * never errors), guardrails (input block with its audit record, redaction, a block firing mid-stream
 * across a chunk boundary), BYOK isolation, and the usage report.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../helpers/node/http.ts";
import { GATEWAY_OPENAI_KEY, type LlmSetup, startLlmGateway } from "../helpers/node/llm.ts";
import { OK_TEXT } from "../helpers/node/llm-stub.ts";
import { uniqueWord } from "../helpers/random";

let setup: LlmSetup;
const tokens: Record<string, string> = {};

async function post(
	tenant: string,
	path: string,
	body: unknown,
	headers: Record<string, string> = {},
	signal?: AbortSignal,
) {
	return fetch(new URL(path, setup.gw.url), {
		method: "POST",
		headers: { authorization: `Bearer ${tokens[tenant]}`, "content-type": "application/json", ...headers },
		body: JSON.stringify(body),
		signal,
	});
}

async function get(tenant: string, path: string) {
	return fetch(new URL(path, setup.gw.url), { headers: { authorization: `Bearer ${tokens[tenant]}` } });
}

const hello = (model: string, extra: Record<string, unknown> = {}) => ({
	model,
	messages: [{ role: "user", content: `hello ${uniqueWord()}` }],
	...extra,
});

/** Reads an SSE answer: the data payloads, parsed, without `[DONE]` (and whether it came). */
async function events(res: Response): Promise<{ chunks: Array<Record<string, unknown>>; done: boolean }> {
	const text = await res.text();
	const data = text
		.split("\n\n")
		.map((e) => e.trim())
		.filter((e) => e.startsWith("data: "))
		.map((e) => e.slice("data: ".length));
	return {
		chunks: data.filter((d) => d !== "[DONE]").map((d) => JSON.parse(d) as Record<string, unknown>),
		done: data.includes("[DONE]"),
	};
}

function contentOf(chunks: Array<Record<string, unknown>>): string {
	return chunks
		.map((c) => (c.choices as Array<{ delta?: { content?: string } }> | undefined)?.[0]?.delta?.content ?? "")
		.join("");
}

function upstreamCalls(model: string): number {
	return setup.stub.requests.filter((r) => (r.body as { model?: string } | undefined)?.model === model).length;
}

beforeAll(async () => {
	setup = await startLlmGateway();
	for (const t of ["acme", "globex", String(setup.gw.vars.OPERATOR_TENANT)]) tokens[t] = await setup.token(t);
});

afterAll(async () => {
	await setup?.dispose();
});

describe("routing", () => {
	it("falls back along the chain and says how many attempts it took", async () => {
		const res = await post("acme", "/v1/chat/completions", hello("fallback"));
		expect(res.status).toBe(200);
		expect(res.headers.get("x-edgeway-provider")).toBe("anthropic");
		// Two attempts on the failing OpenAI target (one retry), then Anthropic.
		expect(res.headers.get("x-edgeway-attempts")).toBe("3");
		expect(
			((await res.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content,
		).toBe(OK_TEXT);
	});

	it("moves on from a 429 whose Retry-After is over the cap, and from a hung upstream", async () => {
		// A hang is retried on the same target once (retriesPerTarget: 1), so two hangs move on.
		setup.stub.script("flaky", ["rate-limited", "hang", "hang"]);
		const limited = await post("acme", "/v1/chat/completions", hello("flaky"));
		expect(limited.status).toBe(200);
		expect(limited.headers.get("x-edgeway-provider")).toBe("local");
		expect(limited.headers.get("x-edgeway-attempts")).toBe("2");
		const hung = await post("acme", "/v1/chat/completions", hello("flaky"));
		expect(hung.status).toBe(200);
		expect(hung.headers.get("x-edgeway-provider")).toBe("local");
	});

	it("never retries a stream once it has started", async () => {
		const before = upstreamCalls("broken-stream");
		const res = await post("acme", "/v1/chat/completions", hello("unstable/broken-stream", { stream: true }));
		expect(res.status).toBe(200);
		const { chunks, done } = await events(res);
		expect(done).toBe(false);
		expect(chunks.at(-1)).toMatchObject({ error: { code: "upstream_error" } });
		expect(upstreamCalls("broken-stream") - before).toBe(1);
	});
});

describe("the provider breaker", () => {
	it("does not count a client that walks away from a stream as a provider failure", async () => {
		// More walk-aways than consecutiveFailures (3): were they failures, the breaker would now be open.
		const model = "unstable/chunks:a long answer that the client will not wait for, chunk after chunk after chunk";
		for (let i = 0; i < 4; i++) {
			const controller = new AbortController();
			const res = await post("acme", "/v1/chat/completions", hello(model, { stream: true }), {}, controller.signal);
			expect(res.status).toBe(200);
			const reader = res.body?.getReader();
			await reader?.read();
			controller.abort();
			await reader?.cancel().catch(() => {});
		}
		const after = await post("acme", "/v1/chat/completions", hello(model));
		expect(after.status).toBe(200);
		expect(after.headers.get("x-edgeway-provider")).toBe("unstable");
	});

	it("opens, spares the upstream, shows in the admin API, and resets", async () => {
		const operator = String(setup.gw.vars.OPERATOR_TENANT);
		setup.stub.script("flaky", ["error", "error", "error", "error"]);
		// Three failures in a row open acme's breaker for flaky/flaky (the two hangs above were the first two).
		for (let i = 0; i < 2; i++) {
			const res = await post("acme", "/v1/chat/completions", hello("flaky"));
			expect(res.headers.get("x-edgeway-provider")).toBe("local");
		}
		const before = upstreamCalls("flaky");
		const spared = await post("acme", "/v1/chat/completions", hello("flaky"));
		expect(spared.headers.get("x-edgeway-provider")).toBe("local");
		expect(spared.headers.get("x-edgeway-attempts")).toBe("1");
		expect(upstreamCalls("flaky")).toBe(before);

		// The transition reaches the registry through the events queue.
		const name = "tenant:acme:llm:flaky/flaky";
		const listed = await eventually(async () => {
			const res = await get("acme", "/v1/admin/breakers?state=open");
			const body = (await res.json()) as { breakers: Array<{ name: string }> };
			return body.breakers.some((b) => b.name === name);
		}, 15_000);
		expect(listed).toBe(true);
		// Another tenant sees nothing of it and cannot reset it.
		const other = (await (await get("globex", "/v1/admin/breakers")).json()) as { breakers: unknown[] };
		expect(other.breakers).toEqual([]);
		expect((await post("globex", "/v1/admin/breakers/reset", { name })).status).toBe(404);
		// The gateway's own breaker for openai is the operator's to see.
		const gatewayListed = await eventually(async () => {
			const body = (await (await get(operator, "/v1/admin/breakers")).json()) as { breakers: Array<{ name: string }> };
			return body.breakers.some((b) => b.name === "gateway:llm:flaky");
		}, 15_000);
		expect(gatewayListed).toBe(true);

		const reset = await post("acme", "/v1/admin/breakers/reset", { name });
		expect(reset.status).toBe(200);
		expect(await reset.json()).toEqual({ name, state: "closed" });
		const resetGateway = await post(operator, "/v1/admin/breakers/reset", { name: "gateway:llm:flaky" });
		expect(resetGateway.status).toBe(200);
		// This isolate trusted "open" for at most its cooldown; after it the next call reaches openai again.
		setup.stub.script("flaky", []);
		const recovered = await eventually(async () => {
			const res = await post("acme", "/v1/chat/completions", hello("flaky"));
			return res.headers.get("x-edgeway-provider") === "flaky";
		}, 10_000);
		expect(recovered).toBe(true);
	});
});

describe("budgets", () => {
	// Its own gateway, whose attempts never time out while the stub holds their answers: no request can
	// settle (and give back the unused part of its reservation) before all ten are decided, however slow
	// the machine, so the count below depends on the budget alone.
	let own: LlmSetup;
	beforeAll(async () => {
		own = await startLlmGateway({
			config: {
				routing: {
					attemptTimeoutMs: 120_000,
					deadlineMs: 120_000,
					retriesPerTarget: 0,
					backoffBaseMs: 10,
					backoffMaxMs: 50,
					retryAfterCapMs: 500,
				},
			},
		});
	}, 60_000);
	afterAll(async () => {
		own?.stub.release();
		await own?.dispose();
	});

	it("admits exactly what the budget holds under concurrency", async () => {
		// Each request reserves its prompt estimate (a few tokens here; anything in 0–100 gives the same
		// count) plus max_tokens (1000): a budget of 3300 holds exactly three reservations, never four.
		await own.gw.seedTenant({ id: "budgeted", tier: "enterprise", limits: { llmBudget: { monthlyTokens: 3300 } } });
		const token = await own.token("budgeted");
		const settled: Response[] = [];
		const pending = Array.from({ length: 10 }, (_, i) =>
			fetch(new URL("/v1/chat/completions", own.gw.url), {
				method: "POST",
				headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
				body: JSON.stringify({
					model: "openai/held",
					messages: [{ role: "user", content: `same length prompt ${i % 10}` }],
					max_tokens: 1000,
				}),
			}).then((res) => {
				settled.push(res);
				return res;
			}),
		);
		// Every request is decided: answered (refused) or held at the stub. Only then may the held ones answer.
		const decided = await eventually(
			async () => settled.length + own.stub.requests.filter((r) => r.scenario === "held").length === 10,
			60_000,
			50,
		);
		expect(decided).toBe(true);
		const heldAtStub = own.stub.requests.filter((r) => r.scenario === "held").length;
		own.stub.release();
		const results = await Promise.all(pending);
		expect(heldAtStub).toBe(3);
		const statuses = results.map((r) => r.status).sort();
		expect(statuses.filter((s) => s === 200)).toHaveLength(3);
		expect(statuses.filter((s) => s === 429)).toHaveLength(7);
		const refused = results.find((r) => r.status === 429);
		if (!refused) throw new Error("no refusal");
		expect(refused.headers.get("content-type")).toMatch(/^application\/json/);
		expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("budget_exceeded");
		expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
	});
});

describe("the cache", () => {
	it("hits for the same tenant, replays as a stream, bypasses on request, never crosses tenants", async () => {
		const request = { model: "smart", messages: [{ role: "user", content: `cache me ${uniqueWord()}` }] };
		const first = await post("globex", "/v1/chat/completions", request);
		expect(first.headers.get("x-edgeway-cache")).toBe("MISS");
		const firstBody = await first.json();
		const calls = setup.stub.requests.length;

		const second = await post("globex", "/v1/chat/completions", request);
		expect(second.headers.get("x-edgeway-cache")).toBe("HIT");
		expect(await second.json()).toEqual(firstBody);
		const streamed = await post("globex", "/v1/chat/completions", { ...request, stream: true });
		expect(streamed.headers.get("x-edgeway-cache")).toBe("HIT");
		expect(streamed.headers.get("content-type")).toMatch(/^text\/event-stream/);
		const replay = await events(streamed);
		expect(replay.done).toBe(true);
		expect(contentOf(replay.chunks)).toBe(OK_TEXT);
		expect(setup.stub.requests.length).toBe(calls);

		const bypass = await post("globex", "/v1/chat/completions", request, { "cache-control": "no-cache" });
		expect(bypass.headers.get("x-edgeway-cache")).toBe("BYPASS");
		expect(setup.stub.requests.length).toBe(calls + 1);

		// Another tenant with the same request is a miss: entries are keyed by tenant.
		const other = await post("acme", "/v1/chat/completions", request);
		expect(other.headers.get("x-edgeway-cache")).toBe("MISS");
		expect(setup.stub.requests.length).toBe(calls + 2);
	});

	it("never caches an error", async () => {
		// Both attempts of the first request fail (502); the same request again reaches the upstream.
		setup.stub.script("cacheprobe", ["error", "error"]);
		const request = { model: "openai/cacheprobe", messages: [{ role: "user", content: "fail, then succeed" }] };
		expect((await post("acme", "/v1/chat/completions", request)).status).toBe(502);
		const again = await post("acme", "/v1/chat/completions", request);
		expect(again.status).toBe(200);
		expect(again.headers.get("x-edgeway-cache")).toBe("MISS");
		expect(upstreamCalls("cacheprobe")).toBe(3);
	});
});

describe("guardrails", () => {
	it("blocks a secret in the prompt with an OpenAI-shaped 400 and an audit record without the secret", async () => {
		const secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD";
		const before = setup.stub.requests.length;
		const res = await post("globex", "/v1/chat/completions", {
			model: "fast",
			messages: [{ role: "user", content: `my key is ${secret}` }],
		});
		expect(res.status).toBe(400);
		const body = (await res.json()) as { error: { code: string; type: string; message: string } };
		expect(body.error).toMatchObject({ code: "content_blocked", type: "invalid_request_error" });
		expect(body.error.message).not.toContain(secret);
		expect(setup.stub.requests.length).toBe(before);

		const db = await setup.gw.db();
		const audited = await eventually(async () => {
			const row = await db
				.prepare("SELECT metadata FROM audit_log WHERE tenant_id = 'globex' AND action = 'SENSITIVE_CONTENT_BLOCKED'")
				.first<{ metadata: string }>();
			return row !== null;
		}, 15_000);
		expect(audited).toBe(true);
		const rows = await db.prepare("SELECT * FROM audit_log WHERE tenant_id = 'globex'").all();
		expect(JSON.stringify(rows.results)).not.toContain(secret);
	});

	it("redacts an e-mail address before it reaches the provider", async () => {
		const res = await post("acme", "/v1/chat/completions", {
			model: "openai/echo",
			messages: [{ role: "user", content: "write to jane.doe@example.com today" }],
		});
		expect(res.status).toBe(200);
		const sent = JSON.stringify(setup.stub.requests.at(-1)?.body);
		expect(sent).not.toContain("jane.doe@example.com");
		expect(sent).toContain("[REDACTED:emails]");
	});

	it("blocks a card number that spans chunk boundaries in a stream", async () => {
		const card = "4111 1111 1111 1111";
		const res = await post(
			"acme",
			"/v1/chat/completions",
			hello(`openai/chunks:Your card is ${card}, thanks`, { stream: true }),
		);
		expect(res.status).toBe(200);
		const { chunks, done } = await events(res);
		expect(done).toBe(false);
		// The stub sends three characters per chunk, so the number arrives split over seven chunks; the
		// guard holds back what may still become a match, so no digit of it reaches the client.
		const text = contentOf(chunks);
		expect(text).not.toMatch(/\d/);
		expect(
			chunks.some(
				(c) => (c.choices as Array<{ finish_reason?: string }> | undefined)?.[0]?.finish_reason === "content_filter",
			),
		).toBe(true);
		expect(chunks.at(-1)).toMatchObject({ error: { code: "content_blocked" } });
	});
	it("redacts an e-mail address from a streamed tool call's arguments, split over chunks", async () => {
		const model = 'openai/tool-args:{"to":"jane.doe@example.com","subject":"hi"}';
		const res = await post("acme", "/v1/chat/completions", hello(model, { stream: true }));
		expect(res.status).toBe(200);
		const { chunks, done } = await events(res);
		expect(done).toBe(true);
		type Delta = { tool_calls?: Array<{ function?: { arguments?: string } }> };
		const args = chunks
			.flatMap((c) => (c.choices as Array<{ delta: Delta }> | undefined) ?? [])
			.flatMap((ch) => ch.delta.tool_calls ?? [])
			.map((t) => t.function?.arguments ?? "")
			.join("");
		expect(args).not.toContain("jane.doe");
		expect(args).toContain("[REDACTED:emails]");
		expect(args).toContain('"subject":"hi"');
	});
});

describe("bring your own key", () => {
	it("uses the tenant's own key for that tenant only, and never returns it", async () => {
		const own = "sk-globex-own-openai-key-7777";
		const put = await fetch(new URL("/v1/admin/tenants/globex/provider-keys/openai", setup.gw.url), {
			method: "PUT",
			headers: { authorization: `Bearer ${tokens.globex}`, "content-type": "application/json" },
			body: JSON.stringify({ key: own }),
		});
		expect(put.status).toBe(200);
		expect(await put.json()).toMatchObject({ provider: "openai", hint: "7777" });
		const list = await (await get("globex", "/v1/admin/tenants/globex/provider-keys")).text();
		expect(list).not.toContain(own);
		expect((await get("acme", "/v1/admin/tenants/globex/provider-keys")).status).toBe(404);
		const stored = await (await setup.gw.db()).prepare("SELECT sealed_key FROM provider_keys").all();
		expect(JSON.stringify(stored.results)).not.toContain(own);

		expect((await post("globex", "/v1/chat/completions", hello("fast"))).status).toBe(200);
		expect(setup.stub.requests.at(-1)?.apiKey).toBe(own);
		expect((await post("acme", "/v1/chat/completions", hello("fast"))).status).toBe(200);
		expect(setup.stub.requests.at(-1)?.apiKey).toBe(GATEWAY_OPENAI_KEY);

		const del = await fetch(new URL("/v1/admin/tenants/globex/provider-keys/openai", setup.gw.url), {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.globex}` },
		});
		expect(del.status).toBe(204);
		expect((await post("globex", "/v1/chat/completions", hello("fast"))).status).toBe(200);
		expect(setup.stub.requests.at(-1)?.apiKey).toBe(GATEWAY_OPENAI_KEY);
	});
});

describe("usage", () => {
	it("reports the caller's own usage by day and model", async () => {
		await setup.gw.seedTenant({ id: "metered", tier: "pro" });
		tokens.metered = await setup.token("metered");
		for (let i = 0; i < 3; i++)
			expect((await post("metered", "/v1/chat/completions", hello("smart"))).status).toBe(200);
		type Report = { totals: { requests: number; costMicroUsd: number }; days: Array<{ model: string }> };
		const read = async () => (await (await get("metered", "/v1/usage")).json()) as Report;
		expect(await eventually(async () => (await read()).totals.requests === 3, 15_000)).toBe(true);
		const report = await read();
		expect(report.days.map((d) => d.model)).toEqual(["ok"]);
		expect(report.totals.costMicroUsd).toBeGreaterThan(0);
		const globex = (await (await get("globex", "/v1/usage")).json()) as { tenantId: string };
		expect(globex.tenantId).toBe("globex");
	});
});
