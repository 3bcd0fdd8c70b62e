/**
 * Property-based fuzzing of the whole Worker (fast-check): every operation of `/openapi.json` plus the
 * webhook ingest, with generated path parameters, query strings, headers and bodies — valid ones from
 * each operation's schema, spoiled ones, and hostile ones (deep nesting, huge strings, wrong types,
 * prototype keys, lone surrogates, invalid UTF-8, truncated JSON, odd content types and credentials,
 * percent-encoded traversal). Properties, for every response: no 5xx (except a dependency failure on
 * the LLM routes, whose providers are unreachable here); every error is an RFC 9457 problem (OpenAI's
 * error object on the OpenAI routes); no secret of the test setup appears in a response or a log line.
 *
 * A fixed seed and a bounded run by default; `FUZZ_RUNS=5000 FUZZ_SEED=7 npm run test:unit -- fuzz` for
 * a longer one (a failure prints its seed and path, so it replays exactly).
 */
import { env, exports } from "cloudflare:workers";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { SCOPES } from "../../src/config";
import { isOpenAiPath } from "../../src/llm";
import { headerValue, hostileBody, hostileSegment, type JsonSchema, schemaValue, spoiled } from "../helpers/fuzz";
import { BASE, call } from "../helpers/gateway";
import { hsToken, seedKey, seedTenant } from "../helpers/identity";
import { hmacSha256Hex } from "../helpers/webhooks";

const RUNS = Number(env.FUZZ_RUNS) > 0 ? Number(env.FUZZ_RUNS) : 400;
const SEED = env.FUZZ_SEED !== "" && Number.isInteger(Number(env.FUZZ_SEED)) ? Number(env.FUZZ_SEED) : 20_260_112;

const WEBHOOK_SECRET = "whsec-fuzz-webhook-secret-5f0c2e";
const PROVIDER_KEY = "sk-fuzz-provider-key-1a2b3c4d5e6f";

/** Body members worth aiming at real values: the configured model aliases and targets. */
const HINTS = {
	model: fc.constantFrom("fast", "smart", "embed", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "nope/nope"),
};

/** Routes whose answer depends on an upstream that is down here: a 502/503/504 dependency failure is theirs to give. */
const UPSTREAM_ROUTES = new Set(["/v1/chat/completions", "/v1/embeddings"]);
const UPSTREAM_CODES = new Set(["upstream-error", "upstream-unavailable", "upstream-timeout"]);

interface Param {
	name: string;
	in: "path" | "query" | "header" | "cookie";
	schema?: JsonSchema;
}

interface Operation {
	method: string;
	/** OpenAPI template, `/v1/webhooks/endpoints/{endpointId}`. */
	path: string;
	params: Param[];
	body?: JsonSchema;
}

interface OpenApiDocument {
	paths: Record<
		string,
		Record<string, { parameters?: Param[]; requestBody?: { content?: Record<string, { schema?: JsonSchema }> } }>
	>;
	components?: { schemas?: Record<string, JsonSchema> };
}

interface Fixture {
	operations: Operation[];
	resolve: (ref: string) => JsonSchema;
	/** Real ids for path parameters, so generated requests reach existing records. */
	known: Record<string, string[]>;
	operatorToken: string;
	tenantToken: string;
	secrets: string[];
}

let fixture: Fixture;
const logLines: string[] = [];

function operationsOf(doc: OpenApiDocument): Operation[] {
	const out: Operation[] = [];
	for (const [path, methods] of Object.entries(doc.paths)) {
		for (const [method, op] of Object.entries(methods)) {
			const content = op.requestBody?.content ?? {};
			out.push({
				method: method.toUpperCase(),
				path,
				params: op.parameters ?? [],
				body: content["application/json"]?.schema,
			});
		}
	}
	// Not in the document (it is the document, and the page that shows it), or nowhere at all.
	out.push({ method: "GET", path: "/openapi.json", params: [] }, { method: "GET", path: "/docs", params: [] });
	out.push({ method: "GET", path: "/", params: [] }, { method: "POST", path: "/v1/nothing/{id}", params: [] });
	return out;
}

beforeAll(async () => {
	// Nothing leaves the Worker: providers, IdP keys and webhook destinations are all "down" (as offline).
	vi.spyOn(globalThis, "fetch").mockImplementation(async () => {
		throw new TypeError("fetch failed: network disabled in the fuzz test");
	});
	for (const level of ["log", "info", "warn", "error", "debug"] as const) {
		vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
			logLines.push(args.map(String).join(" "));
		});
	}

	const operator = env.OPERATOR_TENANT;
	await seedTenant({ id: operator, tier: "enterprise" });
	const operatorToken = await hsToken({ tenantId: operator, scopes: [...SCOPES], tier: "enterprise" });
	const tenant = await seedTenant({ tier: "pro" });
	const tenantToken = await hsToken({ tenantId: tenant, scopes: [...SCOPES] });
	const victim = await seedTenant({ tier: "pro" });
	const victimKey = await seedKey(victim, { scopes: ["api:read"] });

	const json = { "content-type": "application/json" };
	const endpointRes = await call("/v1/webhooks/endpoints", {
		method: "POST",
		token: operatorToken,
		headers: json,
		body: JSON.stringify({ name: "fuzz", source: "github", secrets: [WEBHOOK_SECRET] }),
	});
	expect(endpointRes.status).toBe(201);
	const endpointId = ((await endpointRes.json()) as { id: string }).id;
	const payload = new TextEncoder().encode('{"zen":"fuzz"}');
	const delivered = await call(`/webhooks/${endpointId}`, {
		method: "POST",
		headers: {
			...json,
			"x-github-event": "ping",
			"x-github-delivery": "fuzz-1",
			"x-hub-signature-256": `sha256=${await hmacSha256Hex(WEBHOOK_SECRET, payload)}`,
		},
		body: payload,
	});
	expect(delivered.status).toBe(202);
	const deliveryId = ((await delivered.json()) as { id: string }).id;
	const keyRes = await call(`/v1/admin/tenants/${victim}/provider-keys/openai`, {
		method: "PUT",
		token: operatorToken,
		headers: json,
		body: JSON.stringify({ key: PROVIDER_KEY }),
	});
	expect(keyRes.status).toBeLessThan(300);

	const doc = (await (await call("/openapi.json")).json()) as OpenApiDocument;
	const schemas = doc.components?.schemas ?? {};
	fixture = {
		operations: operationsOf(doc),
		resolve: (ref) => schemas[ref.replace("#/components/schemas/", "")] ?? {},
		// The tenants whose tokens the run uses are left out on purpose: suspending one, or moving it to the
		// free tier, would end the run's coverage of everything behind it.
		known: {
			tenantId: [victim],
			keyId: [victimKey.id],
			endpointId: [endpointId],
			deliveryId: [deliveryId],
			provider: ["openai", "anthropic", "workers-ai"],
		},
		operatorToken,
		tenantToken,
		secrets: [
			env.JWT_HS256_SECRET ?? "",
			env.ENCRYPTION_KEY,
			operatorToken,
			tenantToken,
			victimKey.key,
			WEBHOOK_SECRET,
			PROVIDER_KEY,
		].filter((s) => s.length >= 16),
	};
	expect(fixture.operations.length).toBeGreaterThan(25);
});

afterAll(() => vi.restoreAllMocks());

/** One generated request, before it is turned into a `Request`. */
interface Generated {
	method: string;
	path: string;
	query: string;
	headers: Record<string, string>;
	body?: string | Uint8Array;
	/** Sign the body as GitHub would, with the endpoint's real secret (webhook ingest only). */
	sign: boolean;
}

function pathArb(op: Operation): fc.Arbitrary<string> {
	const names = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1] as string);
	const schemaOf = (name: string) => op.params.find((p) => p.in === "path" && p.name === name)?.schema ?? {};
	const values = names.map((name) =>
		fc.oneof(
			{
				weight: 6,
				arbitrary: fixture.known[name] ? fc.constantFrom(...(fixture.known[name] ?? [])) : fc.constant(name),
			},
			{ weight: 2, arbitrary: schemaValue(schemaOf(name), fixture.resolve).map((v) => encodeURIComponent(String(v))) },
			{ weight: 1, arbitrary: hostileSegment },
		),
	);
	const mutations = fc.constantFrom<(p: string) => string>(
		(p) => `${p}/`,
		(p) => p.replace("/", "//"),
		(p) => p.replaceAll("/", "//"),
		(p) => p.toUpperCase(),
		(p) => `${p}/..%2f..%2fadmin%2ftenants`,
		(p) => p.replace(/\/([^/]*)$/, "/./$1"),
		(p) => p.replace(/\/([^/]*)$/, "/%2e%2e/$1"),
		(p) => p.replace(/[a-z]/, (c) => `%${c.charCodeAt(0).toString(16)}`),
		(p) => `${p}%00`,
		(p) => `${p};jsessionid=1`,
	);
	const mutation = fc.oneof(
		{ weight: 5, arbitrary: fc.constant((p: string) => p) },
		{ weight: 1, arbitrary: mutations },
	);
	return fc.tuple(fc.tuple(...values), mutation).map(([segments, mutate]) => {
		let i = 0;
		return mutate(op.path.replace(/\{\w+\}/g, () => segments[i++] ?? ""));
	});
}

function queryArb(op: Operation): fc.Arbitrary<string> {
	const params = op.params.filter((p) => p.in === "query");
	const key = fc.oneof(
		...(params.length > 0 ? [fc.constantFrom(...params.map((p) => p.name))] : []),
		fc.constantFrom("limit", "cursor", "__proto__", "constructor", "a[b]", "a[]", "", "%", "%ZZ", "ü"),
		fc.string({ maxLength: 10 }),
	);
	const valid = params.map((p) => schemaValue(p.schema ?? {}, fixture.resolve).map((v) => String(v)));
	const value = fc.oneof(
		...(valid.length > 0 ? [{ weight: 3, arbitrary: fc.oneof(...valid) }] : []),
		{ weight: 2, arbitrary: fc.string({ maxLength: 30 }) },
		{
			weight: 2,
			arbitrary: fc.constantFrom(
				"-1",
				"0",
				"1e9",
				"NaN",
				"Infinity",
				"1.5",
				"9".repeat(40),
				"2026-02-30",
				"%",
				"%ZZ",
				"+",
				"%F0%9F",
			),
		},
		{ weight: 1, arbitrary: fc.integer({ min: 1000, max: 12_000 }).map((n) => "q".repeat(n)) },
	);
	const pair = fc
		.tuple(key, value, fc.boolean())
		.map(([k, v, encode]) => (encode ? `${encodeURIComponent(k)}=${encodeURIComponent(v)}` : `${k}=${v}`));
	return fc.oneof(
		{ weight: 2, arbitrary: fc.constant("") },
		{ weight: 3, arbitrary: fc.array(pair, { minLength: 1, maxLength: 6 }).map((pairs) => `?${pairs.join("&")}`) },
		{ weight: 1, arbitrary: fc.constantFrom("?", "?&&", "?=", "?a", "?a=1&a=2&a=3", "?%", "?limit=1&limit=2") },
	);
}

const oddContentType = fc.constantFrom(
	"application/json; charset=utf-8",
	"application/json;charset=latin1",
	"APPLICATION/JSON",
	"application/vnd.api+json",
	"application/merge-patch+json",
	"application/a+b+json",
	"application/json;;;",
	"application/jsonx",
	"text/plain",
	"text/json",
	"multipart/form-data; boundary=x",
	"application/x-www-form-urlencoded",
	"application/octet-stream",
	"*/*",
	"",
);

/** Mostly JSON, so bodies reach the handlers; sometimes odd; sometimes absent. */
const contentType = fc.oneof(
	{ weight: 8, arbitrary: fc.constant("application/json") },
	{ weight: 3, arbitrary: oddContentType },
	{ weight: 1, arbitrary: fc.constant(undefined) },
);

function authArb(): fc.Arbitrary<Record<string, string>> {
	const { operatorToken, tenantToken } = fixture;
	const [header, payload] = operatorToken.split(".");
	return fc.oneof(
		{ weight: 12, arbitrary: fc.constant({ authorization: `Bearer ${operatorToken}` }) },
		{ weight: 3, arbitrary: fc.constant({ authorization: `Bearer ${tenantToken}` }) },
		{ weight: 2, arbitrary: fc.constant({}) },
		{
			weight: 2,
			arbitrary: fc.constantFrom<Record<string, string>>(
				{ authorization: "Bearer" },
				{ authorization: "Bearer " },
				{ authorization: `bearer  ${operatorToken}` },
				{ authorization: `Basic ${btoa("user:pass")}` },
				{ authorization: `Bearer ${operatorToken}x` },
				{ authorization: `Bearer ${header}.${payload}.` },
				{ authorization: `Bearer ${btoa('{"alg":"none","typ":"JWT"}')}.${payload}.` },
				{ authorization: `Bearer ${btoa('{"alg":"RS256","kid":"nope"}').replace(/=+$/, "")}.${payload}.c2ln` },
				{ authorization: "Bearer ew_abc_def" },
				{ authorization: `Bearer ew_${"a".repeat(12)}_${"0".repeat(64)}` },
				{ "x-api-key": "ew_" },
				{ "x-api-key": `ew_${"z".repeat(12)}_${"f".repeat(64)}` },
				{ authorization: `Bearer ${operatorToken}`, "x-api-key": "ew_conflict" },
			),
		},
		{ weight: 1, arbitrary: headerValue.map((v) => ({ authorization: v })) },
		{ weight: 1, arbitrary: headerValue.map((v) => ({ authorization: `Bearer ${v}` })) },
	);
}

/** A few of these per request, most often none: each is one header name and its generated value. */
const extraHeader: fc.Arbitrary<[string, string]> = fc.oneof(
	{
		weight: 3,
		arbitrary: fc.tuple(
			fc.constant("traceparent"),
			fc.oneof(
				fc.constantFrom(
					"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
					"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
					"00-00000000000000000000000000000000-0000000000000000-00",
					"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
					"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
					"garbage",
				),
				headerValue,
			),
		),
	},
	{ weight: 1, arbitrary: fc.tuple(fc.constant("tracestate"), headerValue) },
	{ weight: 2, arbitrary: fc.tuple(fc.constant("x-request-id"), headerValue) },
	{ weight: 2, arbitrary: fc.tuple(fc.constant("idempotency-key"), headerValue) },
	{
		weight: 1,
		arbitrary: fc.tuple(fc.constant("cache-control"), fc.oneof(fc.constantFrom("no-cache", "max-age=-1"), headerValue)),
	},
	{ weight: 1, arbitrary: fc.tuple(fc.constant("x-edgeway-cache"), fc.oneof(fc.constant("bypass"), headerValue)) },
	{
		weight: 2,
		arbitrary: fc.tuple(
			fc.constant("x-edgeway-providers"),
			fc.oneof(fc.constantFrom("openai", "anthropic, workers-ai", ",,,", "nope"), headerValue),
		),
	},
	{ weight: 1, arbitrary: fc.tuple(fc.constant("origin"), fc.oneof(fc.constant("https://app.example"), headerValue)) },
	{ weight: 1, arbitrary: fc.tuple(fc.constant("accept"), fc.oneof(fc.constant("text/event-stream"), headerValue)) },
	{ weight: 1, arbitrary: fc.tuple(fc.constant("content-encoding"), fc.constantFrom("gzip", "br", "identity", "x")) },
	{ weight: 1, arbitrary: fc.tuple(fc.constantFrom("x-github-event", "x-github-delivery"), headerValue) },
	{
		weight: 1,
		arbitrary: fc.tuple(
			fc.constant("x-hub-signature-256"),
			fc.oneof(fc.constantFrom("sha256=", "sha256=zz", `sha256=${"0".repeat(64)}`), headerValue),
		),
	},
	{
		weight: 1,
		arbitrary: fc.tuple(
			fc.string({ minLength: 1, maxLength: 20 }).map((n) => `x-${n}`),
			headerValue,
		),
	},
);

const extraHeaders: fc.Arbitrary<Record<string, string>> = fc.oneof(
	{ weight: 3, arbitrary: fc.constant({}) },
	{
		weight: 6,
		arbitrary: fc.array(extraHeader, { minLength: 1, maxLength: 4 }).map((pairs) => Object.fromEntries(pairs)),
	},
	// Past the 32 KiB header limit.
	{ weight: 1, arbitrary: fc.integer({ min: 30_000, max: 40_000 }).map((n) => ({ "x-filler": "f".repeat(n) })) },
);

function bodyArb(op: Operation): fc.Arbitrary<string | Uint8Array | undefined> {
	const valid = op.body ? schemaValue(op.body, fixture.resolve, HINTS) : fc.jsonValue({ maxDepth: 2 });
	return fc.oneof(
		{ weight: 4, arbitrary: valid.map((v) => JSON.stringify(v) ?? "null") },
		{ weight: 4, arbitrary: valid.chain(spoiled) },
		{ weight: 3, arbitrary: hostileBody },
		{ weight: 1, arbitrary: fc.constant(undefined) },
	);
}

/**
 * How often an operation is drawn: the LLM plane and the ingest (where client data meets the most
 * code: cache keys, guardrails, provider translation, signatures) most, other body-reading routes next.
 */
function weightOf(op: Operation): number {
	if (UPSTREAM_ROUTES.has(op.path) || op.path === "/webhooks/{endpointId}") return 6;
	return op.body ? 3 : 1;
}

/** Anything at all: hostile paths, queries, credentials, headers and bodies, any method. */
function envelopeArb(op: Operation): fc.Arbitrary<Generated> {
	const method = fc.oneof(
		{ weight: 9, arbitrary: fc.constant(op.method) },
		{ weight: 1, arbitrary: fc.constantFrom("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") },
	);
	return fc
		.record({
			method,
			path: pathArb(op),
			query: queryArb(op),
			auth: authArb(),
			type: contentType,
			extra: extraHeaders,
			body: bodyArb(op),
			sign: fc.boolean(),
		})
		.map(({ method, path, query, auth, type, extra, body, sign }) => ({
			method,
			path,
			query,
			headers: { ...extra, ...auth, ...(type === undefined ? {} : { "content-type": type }) },
			body: method === "GET" || method === "HEAD" ? undefined : body,
			sign: sign && op.path === "/webhooks/{endpointId}",
		}));
}

/**
 * A well-formed request (the operation's method, real ids, a valid credential, a JSON content type,
 * a signature on ingest) whose body is valid, spoiled or hostile: this is what gets past the edge
 * checks into the handlers and the walkers behind them.
 */
function bodyFirstArb(op: Operation): fc.Arbitrary<Generated> {
	const known = (name: string) => fc.constantFrom(...(fixture.known[name] ?? [name]));
	const names = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1] as string);
	const valid = op.body ? schemaValue(op.body, fixture.resolve, HINTS) : fc.jsonValue({ maxDepth: 2 });
	return fc
		.record({
			segments: fc.tuple(...names.map(known)),
			token: fc.constantFrom(fixture.operatorToken, fixture.operatorToken, fixture.tenantToken),
			body: fc.oneof(
				{ weight: 2, arbitrary: valid.map((v) => JSON.stringify(v) ?? "null") },
				{ weight: 6, arbitrary: valid.chain(spoiled) },
				{ weight: 1, arbitrary: hostileBody },
			),
			sign: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
		})
		.map(({ segments, token, body, sign }) => {
			let i = 0;
			return {
				method: op.method,
				path: op.path.replace(/\{\w+\}/g, () => segments[i++] ?? ""),
				query: "",
				headers: {
					authorization: `Bearer ${token}`,
					"content-type": "application/json",
					"x-github-event": "push",
					"x-github-delivery": crypto.randomUUID(),
				},
				body,
				sign: sign && op.path === "/webhooks/{endpointId}",
			};
		});
}

async function toRequest(g: Generated): Promise<Request | null> {
	const headers = { ...g.headers };
	if (g.sign) {
		const bytes = typeof g.body === "string" ? new TextEncoder().encode(g.body) : (g.body ?? new Uint8Array());
		headers["x-hub-signature-256"] = `sha256=${await hmacSha256Hex(WEBHOOK_SECRET, bytes)}`;
	}
	try {
		return new Request(`${BASE}${g.path}${g.query}`, { method: g.method, headers, body: g.body });
	} catch {
		return null; // Not a request a client could send (the URL or a header does not parse).
	}
}

/** The path Hono routes on (it decodes percent-escapes other than reserved characters). */
function routedPath(url: string): string {
	const pathname = new URL(url).pathname;
	try {
		return decodeURI(pathname);
	} catch {
		return pathname;
	}
}

/** Checks the properties on one response; throws (an assertion) when one does not hold. */
async function checkResponse(req: Request, res: Response): Promise<void> {
	const text = await res.text();
	const path = routedPath(req.url);
	const context = `${req.method} ${req.url.slice(0, 200)} → ${res.status} ${text.slice(0, 300)}`;
	const headerText = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
	for (const secret of fixture.secrets) {
		expect(text.includes(secret) || headerText.includes(secret), `a secret echoed: ${context}`).toBe(false);
	}
	if (res.status < 400) return;
	const type = res.headers.get("content-type") ?? "";
	if (req.method === "HEAD") {
		expect(res.status, context).toBeLessThan(500);
		return;
	}
	let body: Record<string, unknown>;
	try {
		body = JSON.parse(text) as Record<string, unknown>;
	} catch {
		throw new Error(`an error body that is not JSON: ${context}`);
	}
	if (isOpenAiPath(path)) {
		expect(type, context).toBe("application/json");
		const error = body.error as Record<string, unknown> | undefined;
		expect(typeof error?.message === "string" && typeof error.type === "string", context).toBe(true);
		const code = String(error?.code ?? "").replaceAll("_", "-");
		if (res.status >= 500) expect(UPSTREAM_ROUTES.has(path) && UPSTREAM_CODES.has(code), context).toBe(true);
	} else {
		expect(type, context).toBe("application/problem+json");
		expect(
			typeof body.type === "string" &&
				typeof body.title === "string" &&
				body.status === res.status &&
				typeof body.code === "string",
			context,
		).toBe(true);
		expect(res.status, context).toBeLessThan(500);
	}
}

/** Sends every generated request and checks each response; both properties share it. */
async function fuzz(arb: fc.Arbitrary<Generated>, numRuns: number): Promise<void> {
	let sent = 0;
	await fc.assert(
		fc.asyncProperty(arb, async (g) => {
			const req = await toRequest(g);
			fc.pre(req !== null);
			const res = await exports.default.fetch(req as Request);
			sent++;
			await checkResponse(req as Request, res);
		}),
		{ seed: SEED, numRuns },
	);
	expect(sent).toBeGreaterThan(numRuns / 2);
	const leaked = logLines.filter((line) => fixture.secrets.some((s) => line.includes(s)));
	expect(leaked.map((l) => l.slice(0, 300))).toEqual([]);
}

const TIMEOUT = Math.max(120_000, RUNS * 1_000);

describe(`fuzz: every route against generated requests (${RUNS} runs each, seed ${SEED})`, () => {
	it("answers no hostile path, query, credential, header or body with a 5xx, an error out of shape or a secret", {
		timeout: TIMEOUT,
	}, async () => {
		const ops = fixture.operations;
		await fuzz(fc.oneof(...ops.map((op) => ({ weight: weightOf(op), arbitrary: envelopeArb(op) }))), RUNS);
	});

	it("answers no valid, spoiled or hostile body on a well-formed request with a 5xx, an error out of shape or a secret", {
		timeout: TIMEOUT,
	}, async () => {
		const ops = fixture.operations.filter((op) => op.body || op.path === "/webhooks/{endpointId}");
		expect(ops.length).toBeGreaterThan(10);
		await fuzz(fc.oneof(...ops.map((op) => ({ weight: weightOf(op), arbitrary: bodyFirstArb(op) }))), RUNS);
	});
});
