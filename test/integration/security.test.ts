/**
 * The shared security suite (test/helpers/security-suite.ts) on every authenticated route group. The
 * operations are read from the app's `/openapi.json`: every documented operation that is not on the
 * public list below must belong to a group here, so a new route is covered as soon as it is documented,
 * and a new group fails this file until it is described. The groups issue 10 names are checked by name,
 * so the derived list cannot silently shrink.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { appendAudit } from "../../src/audit";
import { breakers, database, deadLetters, llmUsage } from "../../src/db";
import { call, json } from "../helpers/gateway";
import { operatorToken, uniqueId } from "../helpers/identity";
import { uniqueWord } from "../helpers/random";
import {
	documentedOperations,
	groupOf,
	label,
	type Operation,
	type RouteGroup,
	type Sample,
	securitySuite,
} from "../helpers/security-suite";
import { answerFetch } from "../helpers/upstreams";
import { createEndpoint, SECRET } from "../helpers/webhooks";

/** Documented operations that take no tenant credential: probes, and webhook ingest (signed by the sender). */
const PUBLIC = new Set(["GET /healthz", "GET /readyz", "POST /webhooks/{endpointId}"]);

// ---------------------------------------------------------------- LLM providers, answered here

const OPENAI = "https://api.openai.com/v1";

answerFetch(`${OPENAI}/chat/completions`, () =>
	Response.json({
		id: "chatcmpl-suite",
		object: "chat.completion",
		created: Math.floor(Date.now() / 1000),
		model: "gpt-4o-mini",
		choices: [{ index: 0, message: { role: "assistant", content: "Hello." }, finish_reason: "stop" }],
		usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
	}),
);
answerFetch(`${OPENAI}/embeddings`, () =>
	Response.json({
		object: "list",
		data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2, 0.3] }],
		model: "text-embedding-3-small",
		usage: { prompt_tokens: 2, total_tokens: 2 },
	}),
);

/** Gives the tenant its own OpenAI key (BYOK), set by the operator: the test env has no gateway key. */
async function withOpenAiKey(tenantId: string): Promise<void> {
	const res = await call(`/v1/admin/tenants/${tenantId}/provider-keys/openai`, {
		...json("PUT", { key: `sk-suite-${tenantId}` }),
		token: await operatorToken(),
	});
	expect(res.status, await res.clone().text()).toBe(200);
}

/** A fresh prompt each time: the pro tier caches answers. */
const chat = (): Sample => ({
	path: "/v1/chat/completions",
	init: json("POST", { model: "fast", messages: [{ role: "user", content: `Hello ${uniqueWord()}` }] }),
});

// ---------------------------------------------------------------- the groups

async function listed<T>(res: Response, key: string): Promise<T[]> {
	expect(res.status, await res.clone().text()).toBe(200);
	return ((await res.json()) as Record<string, T[]>)[key] ?? [];
}

const GROUPS: RouteGroup[] = [
	{
		name: "me (GET /v1/me)",
		prefixes: ["/v1/me"],
		scope: "api:read",
		plane: "api",
		errors: "problem",
		samples: [{ request: () => ({ path: "/v1/me" }), okStatus: 200 }],
		tenancy: { none: "the answer is the caller's own identity; there is no other tenant's resource to address" },
	},
	{
		name: "admin (tenants and API keys)",
		prefixes: ["/v1/admin"],
		scope: "admin",
		plane: "api",
		errors: "problem",
		samples: [
			{ request: (t) => ({ path: `/v1/admin/tenants/${t}` }), okStatus: 200 },
			{ request: (t) => ({ path: `/v1/admin/tenants/${t}/keys` }), okStatus: 200 },
			{
				request: (t) => ({
					path: `/v1/admin/tenants/${t}/keys`,
					init: json("POST", { name: "suite", scopes: ["admin"] }),
				}),
				okStatus: 201,
			},
		],
		async tenancy({ owner, stranger, send, expectRefused }) {
			const created = await send(owner.token, {
				path: `/v1/admin/tenants/${owner.tenantId}/keys`,
				init: json("POST", { name: "owned", scopes: ["admin"] }),
			});
			expect(created.status).toBe(201);
			const key = (await created.json()) as { id: string };
			const ownerPath = `/v1/admin/tenants/${owner.tenantId}`;
			await expectRefused(await send(stranger.token, { path: ownerPath }), 404, "not-found");
			await expectRefused(await send(stranger.token, { path: `${ownerPath}/keys` }), 404, "not-found");
			await expectRefused(
				await send(stranger.token, { path: `${ownerPath}/keys`, init: json("POST", { name: "x", scopes: ["admin"] }) }),
				404,
				"not-found",
			);
			await expectRefused(
				await send(stranger.token, { path: `${ownerPath}/keys/${key.id}`, init: { method: "DELETE" } }),
				404,
				"not-found",
			);
			// The owner's key, addressed through the stranger's own tenant: still not found.
			await expectRefused(
				await send(stranger.token, {
					path: `/v1/admin/tenants/${stranger.tenantId}/keys/${key.id}`,
					init: { method: "DELETE" },
				}),
				404,
				"not-found",
			);
			// Changing a tenant, even one's own, is the operator's.
			await expectRefused(
				await send(stranger.token, { path: ownerPath, init: json("PATCH", { status: "suspended" }) }),
				403,
				"forbidden",
			);
			const keys = await listed<{ id: string; revokedAt: number | null }>(
				await send(owner.token, { path: `${ownerPath}/keys` }),
				"keys",
			);
			expect(keys).toMatchObject([{ id: key.id, revokedAt: null }]);
			const tenant = await send(owner.token, { path: ownerPath });
			expect(await tenant.json()).toMatchObject({ id: owner.tenantId, status: "active" });
		},
	},
	{
		name: "provider keys (/v1/admin/tenants/{tenantId}/provider-keys)",
		prefixes: ["/v1/admin/tenants/{tenantId}/provider-keys"],
		scope: "admin",
		plane: "api",
		errors: "problem",
		samples: [
			{ request: (t) => ({ path: `/v1/admin/tenants/${t}/provider-keys` }), okStatus: 200 },
			{
				request: (t) => ({
					path: `/v1/admin/tenants/${t}/provider-keys/openai`,
					init: json("PUT", { key: "sk-suite-0123456789" }),
				}),
				okStatus: 200,
			},
		],
		async tenancy({ owner, stranger, send, expectRefused }) {
			const base = `/v1/admin/tenants/${owner.tenantId}/provider-keys`;
			const put = await send(owner.token, {
				path: `${base}/openai`,
				init: json("PUT", { key: "sk-owner-0123456789" }),
			});
			expect(put.status).toBe(200);
			await expectRefused(await send(stranger.token, { path: base }), 404, "not-found");
			await expectRefused(
				await send(stranger.token, { path: `${base}/openai`, init: json("PUT", { key: "sk-stranger-0123456789" }) }),
				404,
				"not-found",
			);
			await expectRefused(
				await send(stranger.token, { path: `${base}/openai`, init: { method: "DELETE" } }),
				404,
				"not-found",
			);
			const keys = await listed<{ provider: string; hint: string }>(await send(owner.token, { path: base }), "keys");
			expect(keys).toMatchObject([{ provider: "openai", hint: "6789" }]);
			expect(keys).toHaveLength(1);
		},
	},
	{
		name: "breakers (/v1/admin/breakers)",
		prefixes: ["/v1/admin/breakers"],
		scope: "admin",
		plane: "api",
		errors: "problem",
		samples: [{ request: () => ({ path: "/v1/admin/breakers" }), okStatus: 200 }],
		async tenancy({ owner, stranger, send, expectRefused }) {
			const name = `tenant:${owner.tenantId}:llm:openai`;
			await database(env.DB)
				.insert(breakers)
				.values({ name, tenantId: owner.tenantId, target: "llm:openai", state: "open", seq: 1, updatedAt: Date.now() })
				.run();
			const theirs = await listed<{ name: string }>(
				await send(stranger.token, { path: "/v1/admin/breakers" }),
				"breakers",
			);
			expect(theirs.map((b) => b.name)).not.toContain(name);
			await expectRefused(
				await send(stranger.token, { path: "/v1/admin/breakers/reset", init: json("POST", { name }) }),
				404,
				"not-found",
			);
			const own = await listed<{ name: string; state: string }>(
				await send(owner.token, { path: "/v1/admin/breakers" }),
				"breakers",
			);
			expect(own).toMatchObject([{ name, state: "open" }]);
		},
	},
	{
		name: "dead letters (/v1/admin/dead-letters)",
		prefixes: ["/v1/admin/dead-letters"],
		scope: "admin",
		plane: "api",
		errors: "problem",
		samples: [{ request: () => ({ path: "/v1/admin/dead-letters" }), okStatus: 200 }],
		async tenancy({ owner, stranger, send, expectRefused }) {
			const id = `dl_${crypto.randomUUID().replaceAll("-", "")}`;
			await database(env.DB)
				.insert(deadLetters)
				.values({ id, eventId: uniqueId("ev"), tenantId: owner.tenantId, type: "test.thing", event: {}, attempts: 6 })
				.run();
			const theirs = await listed<{ id: string }>(
				await send(stranger.token, { path: "/v1/admin/dead-letters" }),
				"deadLetters",
			);
			expect(theirs.map((d) => d.id)).not.toContain(id);
			await expectRefused(await send(stranger.token, { path: `/v1/admin/dead-letters/${id}` }), 404, "not-found");
			await expectRefused(
				await send(stranger.token, { path: `/v1/admin/dead-letters/${id}/replay`, init: { method: "POST" } }),
				404,
				"not-found",
			);
			const batch = await send(stranger.token, {
				path: "/v1/admin/dead-letters/replay",
				init: json("POST", { ids: [id] }),
			});
			expect(batch.status).toBe(200);
			expect(await batch.json()).toMatchObject({ replayed: [], skipped: [{ id, reason: "not-found" }] });
			const own = await send(owner.token, { path: `/v1/admin/dead-letters/${id}` });
			expect(own.status).toBe(200);
			expect(await own.json()).toMatchObject({ id, tenantId: owner.tenantId, status: "dead", replayedAt: null });
		},
	},
	{
		name: "webhooks management (/v1/webhooks)",
		prefixes: ["/v1/webhooks"],
		scope: "webhooks:manage",
		plane: "webhooks",
		errors: "problem",
		samples: [
			{ request: () => ({ path: "/v1/webhooks/endpoints" }), okStatus: 200 },
			{
				request: () => ({
					path: "/v1/webhooks/endpoints",
					init: json("POST", { name: "suite", source: "github", secrets: [SECRET] }),
				}),
				okStatus: 201,
			},
			{ request: () => ({ path: "/v1/webhooks/deliveries" }), okStatus: 200 },
		],
		async tenancy({ owner, stranger, send, expectRefused }) {
			const endpoint = await createEndpoint(owner.token, { name: "owned", source: "github", secrets: [SECRET] });
			const theirs = await listed<{ id: string }>(
				await send(stranger.token, { path: "/v1/webhooks/endpoints" }),
				"endpoints",
			);
			expect(theirs.map((e) => e.id)).not.toContain(endpoint.id);
			const path = `/v1/webhooks/endpoints/${endpoint.id}`;
			await expectRefused(await send(stranger.token, { path }), 404, "not-found");
			await expectRefused(
				await send(stranger.token, { path, init: json("PATCH", { status: "disabled" }) }),
				404,
				"not-found",
			);
			const own = await send(owner.token, { path });
			expect(own.status).toBe(200);
			expect(await own.json()).toMatchObject({ id: endpoint.id, status: "active" });
		},
	},
	{
		name: "audit (/v1/audit)",
		prefixes: ["/v1/audit"],
		scope: "admin",
		plane: "api",
		errors: "problem",
		samples: [
			{ request: () => ({ path: "/v1/audit" }), okStatus: 200 },
			{ request: () => ({ path: "/v1/audit/verify" }), okStatus: 200 },
		],
		async tenancy({ owner, stranger, send }) {
			await appendAudit(env.DB, { tenantId: owner.tenantId, actor: "system", action: "suite.owned" });
			const theirs = await listed<{ action: string }>(await send(stranger.token, { path: "/v1/audit" }), "records");
			expect(theirs.map((r) => r.action)).not.toContain("suite.owned");
			const own = await listed<{ action: string }>(await send(owner.token, { path: "/v1/audit" }), "records");
			expect(own.map((r) => r.action)).toContain("suite.owned");
		},
	},
	{
		name: "LLM (/v1/chat/completions, /v1/embeddings, /v1/models)",
		prefixes: ["/v1/chat", "/v1/embeddings", "/v1/models"],
		scope: "llm",
		plane: "llm",
		errors: "openai",
		samples: [
			{ request: () => ({ path: "/v1/models" }), okStatus: 200 },
			{ request: chat, okStatus: 200, prepare: withOpenAiKey },
			{
				request: () => ({ path: "/v1/embeddings", init: json("POST", { model: "embed", input: "hello" }) }),
				okStatus: 200,
				prepare: withOpenAiKey,
			},
		],
		tenancy: {
			none: "chat, embeddings and models address no stored resource; the answer cache's separation of tenants is checked in test/e2e/llm-plane.test.ts",
		},
	},
	{
		name: "usage (/v1/usage)",
		prefixes: ["/v1/usage"],
		scope: "llm",
		plane: "llm",
		errors: "problem",
		samples: [{ request: () => ({ path: "/v1/usage" }), okStatus: 200 }],
		async tenancy({ owner, stranger, send }) {
			const now = Date.now();
			await database(env.DB)
				.insert(llmUsage)
				.values({
					id: uniqueId("use"),
					tenantId: owner.tenantId,
					actor: "jwt:u",
					operation: "chat",
					requested: "fast",
					promptTokens: 5,
					completionTokens: 7,
					costMicroUsd: 9,
					latencyMs: 1,
					status: 200,
					attempts: 1,
					day: new Date(now).toISOString().slice(0, 10),
					createdAt: now,
				})
				.run();
			const theirs = await send(stranger.token, { path: "/v1/usage" });
			expect(theirs.status).toBe(200);
			expect(await theirs.json()).toMatchObject({ tenantId: stranger.tenantId, totals: { requests: 0 } });
			const own = await send(owner.token, { path: "/v1/usage" });
			expect(await own.json()).toMatchObject({ tenantId: owner.tenantId, totals: { requests: 1, promptTokens: 5 } });
		},
	},
];

/** The groups issue 10 names, each with operations it must find in the document. */
const REQUIRED: Record<string, string[]> = {
	"webhooks management (/v1/webhooks)": ["GET /v1/webhooks/endpoints", "POST /v1/webhooks/endpoints"],
	"LLM (/v1/chat/completions, /v1/embeddings, /v1/models)": [
		"POST /v1/chat/completions",
		"POST /v1/embeddings",
		"GET /v1/models",
	],
	"usage (/v1/usage)": ["GET /v1/usage"],
	"breakers (/v1/admin/breakers)": ["GET /v1/admin/breakers", "POST /v1/admin/breakers/reset"],
	"provider keys (/v1/admin/tenants/{tenantId}/provider-keys)": [
		"GET /v1/admin/tenants/{tenantId}/provider-keys",
		"PUT /v1/admin/tenants/{tenantId}/provider-keys/{provider}",
	],
	"admin (tenants and API keys)": ["POST /v1/admin/tenants", "GET /v1/admin/tenants/{tenantId}/keys"],
	"audit (/v1/audit)": ["GET /v1/audit", "GET /v1/audit/verify"],
	"dead letters (/v1/admin/dead-letters)": ["GET /v1/admin/dead-letters", "POST /v1/admin/dead-letters/{id}/replay"],
	"me (GET /v1/me)": ["GET /v1/me"],
};

const documented = await documentedOperations();
const authenticated = documented.filter((op) => !PUBLIC.has(label(op)));
const byGroup = new Map<RouteGroup, Operation[]>(GROUPS.map((g) => [g, []]));
const orphans: Operation[] = [];
for (const op of authenticated) {
	const group = groupOf(GROUPS, op.path);
	if (group) byGroup.get(group)?.push(op);
	else orphans.push(op);
}

describe("the operations the suite runs on", () => {
	it("are every documented operation but the public ones, and each belongs to a group", () => {
		expect(authenticated.length).toBeGreaterThanOrEqual(29);
		expect(orphans.map(label), "an authenticated route group without a RouteGroup here").toEqual([]);
		expect(
			documented
				.filter((op) => PUBLIC.has(label(op)))
				.map(label)
				.sort(),
		).toEqual([...PUBLIC].sort());
	});

	it("include every group issue 10 names, with the operations named for it", () => {
		expect(GROUPS.map((g) => g.name).sort()).toEqual(Object.keys(REQUIRED).sort());
		for (const group of GROUPS) {
			const found = (byGroup.get(group) ?? []).map(label);
			expect(found, group.name).toEqual(expect.arrayContaining(REQUIRED[group.name] ?? ["(none named)"]));
		}
	});

	it("declare bearer authentication in the document, and the public ones do not", () => {
		expect(authenticated.filter((op) => !op.bearer).map(label)).toEqual([]);
		expect(documented.filter((op) => PUBLIC.has(label(op)) && op.bearer).map(label)).toEqual([]);
	});
});

for (const group of GROUPS) securitySuite(group, byGroup.get(group) ?? []);
