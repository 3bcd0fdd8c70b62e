/**
 * The shared security suite, run on every authenticated route group. The operations come from the
 * app's own OpenAPI document, so a route added to a group is covered without editing a test; the
 * guard checks (no credentials → 401, every kind of bad token or key → 401, unknown tenant → 401,
 * suspended tenant → 403, missing scope → 403, tier without the plane → 403, over the limit → 429)
 * run on every operation, answered in the group's error shape (OpenAI's on the OpenAI-compatible
 * routes, RFC 9457 problems elsewhere). The checks that need a success (valid token and API key, the
 * IdP's token where HS256 is off, a suspension after issuance) and the wrong-tenant checks run on the
 * group's sample requests and fixtures.
 */

import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { base64url, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../src/app";
import { type Plane, SCOPES, type Scope, TIER_NAMES, type TierName, tierPolicy } from "../../src/config";
import { database, tenants } from "../../src/db";
import { call, expectProblem } from "./gateway";
import { hsToken, idpPublicJwk, idpToken, seedKey, seedTenant, serveJwks } from "./identity";

/** One operation of the OpenAPI document. */
export interface Operation {
	method: string;
	/** The path template, e.g. `/v1/admin/tenants/{tenantId}/keys`. */
	path: string;
	/** Whether the document says it takes a request body. */
	hasBody: boolean;
	/** Whether the document declares bearer authentication for it. */
	bearer: boolean;
}

interface OpenApiDocument {
	paths: Record<string, Record<string, { security?: Array<Record<string, unknown>>; requestBody?: unknown }>>;
}

const METHODS = new Set(["get", "put", "post", "delete", "patch", "head", "options"]);

/** Every operation `/openapi.json` documents. */
export async function documentedOperations(): Promise<Operation[]> {
	const res = await call("/openapi.json");
	if (res.status !== 200) throw new Error(`/openapi.json answered ${res.status}`);
	const doc = (await res.json()) as OpenApiDocument;
	return Object.entries(doc.paths).flatMap(([path, item]) =>
		Object.entries(item)
			.filter(([method]) => METHODS.has(method))
			.map(([method, op]) => ({
				method: method.toUpperCase(),
				path,
				hasBody: op.requestBody !== undefined,
				bearer: (op.security ?? []).some((s) => "bearer" in s),
			})),
	);
}

export const label = (op: Pick<Operation, "method" | "path">) => `${op.method} ${op.path}`;

/** A request: a path (with the query) and its init. */
export interface Sample {
	path: string;
	init?: RequestInit;
}

/** A request that succeeds for a caller of `tenantId` holding the group's scope. */
export interface SuccessSample {
	request: (tenantId: string) => Sample;
	okStatus: number;
	/** Runs first for each tenant the sample is sent for (e.g. gives it a provider key). */
	prepare?: (tenantId: string) => Promise<void>;
}

/** What a wrong-tenant check is given: two fresh tenants of the group's tier, each with a token of the group's scope. */
export interface Tenancy {
	owner: { tenantId: string; token: string };
	stranger: { tenantId: string; token: string };
	send: (token: string, sample: Sample) => Promise<Response>;
	/** Asserts the refusal in the group's error shape. */
	expectRefused: (res: Response, status: number, code: string) => Promise<void>;
}

export interface RouteGroup {
	/** The group's name in test titles. */
	name: string;
	/**
	 * The OpenAPI path templates the group owns: an operation belongs to the group whose prefix is the
	 * longest that equals its path or is followed in it by `/`.
	 */
	prefixes: string[];
	/** The scope its guards require. */
	scope: Scope;
	/** The tier plane its guards require; a tier without it is refused. */
	plane: Plane;
	/** How its errors are rendered: OpenAI's shape or RFC 9457 problems. */
	errors: "openai" | "problem";
	/** At least one. */
	samples: SuccessSample[];
	/** Another tenant is refused (or not shown) what belongs to `owner`; or why there is nothing of a tenant's to reach. */
	tenancy: ((t: Tenancy) => Promise<void>) | { none: string };
}

/** The group an operation belongs to, or undefined. */
export function groupOf<G extends Pick<RouteGroup, "prefixes">>(groups: readonly G[], path: string): G | undefined {
	let best: { group: G; length: number } | undefined;
	for (const group of groups) {
		for (const prefix of group.prefixes) {
			const owns = path === prefix || path.startsWith(`${prefix}/`);
			if (owns && prefix.length > (best?.length ?? -1)) best = { group, length: prefix.length };
		}
	}
	return best?.group;
}

/** Placeholder values of path parameters other than `{tenantId}`: syntactically plausible ids of nothing. */
const PLACEHOLDERS: Record<string, string> = {
	keyId: "key_0000000000000000",
	provider: "openai",
	endpointId: `we_${"0".repeat(16)}`,
	deliveryId: `wd_${"0".repeat(20)}`,
	id: `dl_${"0".repeat(32)}`,
};

/**
 * A request for `op` by a caller of `tenantId`: `{tenantId}` is the caller's own tenant, other path
 * parameters are placeholders, and a body, when the operation takes one, is `{}` as JSON. It need not
 * succeed: the guards under test run before any of it is read.
 */
export function requestFor(op: Operation, tenantId: string): Sample {
	const path = op.path.replace(/\{(\w+)\}/g, (_, name: string) =>
		encodeURIComponent(name === "tenantId" ? tenantId : (PLACEHOLDERS[name] ?? `placeholder-${name}`)),
	);
	const init: RequestInit = { method: op.method };
	if (op.hasBody) {
		init.headers = { "content-type": "application/json" };
		init.body = "{}";
	}
	return { path, init };
}

function send(sample: Sample, auth: { token?: string; apiKey?: string }) {
	return call(sample.path, { ...sample.init, ...auth });
}

/** OpenAI's error `type` for a status, as the official clients read it. */
function openAiType(status: number): string {
	if (status === 401) return "authentication_error";
	if (status === 403) return "permission_error";
	if (status === 404) return "not_found_error";
	if (status === 429) return "rate_limit_error";
	return "invalid_request_error";
}

/** Asserts a refusal in `shape` with this status and code; returns the human-readable text. */
async function expectRefusal(
	res: Response,
	shape: RouteGroup["errors"],
	status: number,
	code: string,
	where: string,
): Promise<string> {
	if (shape === "problem") {
		const text = await res.clone().text();
		expect({ where, status: res.status }, text).toEqual({ where, status });
		return (await expectProblem(res, status, code)).detail;
	}
	const body = (await res.json()) as { error?: { message?: unknown; type?: unknown; code?: unknown } };
	expect({ where, status: res.status, error: body.error }).toEqual({
		where,
		status,
		error: { message: expect.any(String), type: openAiType(status), code: code.replaceAll("-", "_"), param: null },
	});
	expect(res.headers.get("content-type"), where).toMatch(/^application\/json/);
	expect(res.headers.get("x-request-id"), where).toMatch(/\S/);
	return body.error?.message as string;
}

async function expectUnauthenticated(res: Response, shape: RouteGroup["errors"], where: string): Promise<void> {
	const challenge = res.headers.get("www-authenticate");
	const text = await expectRefusal(res, shape, 401, "invalid-token", where);
	expect(challenge, where).toMatch(/^Bearer realm="edgeway"/);
	// Deliberately vague: no reason leaks to the client.
	expect(text, where).toMatch(/^(Authentication is required|The access token is invalid)\.$/);
}

/** Codes the guards answer with: a response without one of these (and not 401 or 429) got past them. */
const GUARD_CODES = ["invalid-token", "insufficient-scope", "tier-not-allowed", "tenant-suspended", "rate-limited"];

async function codeOf(res: Response): Promise<string | undefined> {
	const text = await res.text();
	try {
		const body = JSON.parse(text) as { code?: unknown; error?: { code?: unknown } };
		const code = body.code ?? body.error?.code;
		return typeof code === "string" ? code.replaceAll("_", "-") : undefined;
	} catch {
		return undefined;
	}
}

/** Asserts that `res` was not refused by a guard: the handler (or its validation) answered. */
async function expectPastTheGuards(res: Response, where: string): Promise<void> {
	const status = res.status;
	const code = await codeOf(res);
	expect(status === 401 || status === 429 || GUARD_CODES.includes(code ?? ""), `${where}: ${status} ${code}`).toBe(
		false,
	);
}

/** The tier of the callers the checks use (unless a check says otherwise). */
const TIER: TierName = "pro";

/** A tier whose planes lack `plane`, or undefined when every tier has it. */
function tierWithout(plane: Plane): TierName | undefined {
	return TIER_NAMES.find((tier) => !tierPolicy(tier).planes.includes(plane));
}

/** An HS256 token signed with the IdP's RS256 public key as the secret (the key-confusion attack). */
async function keyConfusionToken(tenantId: string, scope: Scope): Promise<string> {
	const now = Math.floor(Date.now() / 1000);
	return new SignJWT({ tid: tenantId, scope })
		.setProtectedHeader({ alg: "HS256" })
		.setSubject("mallory")
		.setIssuer(env.JWT_ISSUER)
		.setAudience(env.JWT_AUDIENCE)
		.setExpirationTime(now + 60)
		.sign(new TextEncoder().encode(JSON.stringify(await idpPublicJwk("RS256"))));
}

/** Tokens that must all be refused with 401, by name. */
async function badTokens(tenantId: string, scope: Scope): Promise<Record<string, string>> {
	const scopes = [scope];
	const now = Math.floor(Date.now() / 1000);
	const none = `${base64url.encode(JSON.stringify({ alg: "none" }))}.${base64url.encode(
		JSON.stringify({ sub: "x", tid: tenantId, scope, iss: env.JWT_ISSUER, aud: env.JWT_AUDIENCE, exp: now + 60 }),
	)}.`;
	return {
		"bad signature": await hsToken({ tenantId, scopes }, "wrong-secret-wrong-secret-wrong-secret-00"),
		expired: await hsToken({ tenantId, scopes, expiresIn: -3600 }),
		"alg none": none,
		"HS256 signed with the RS public key": await keyConfusionToken(tenantId, scope),
		"wrong aud": await idpToken("RS256", { tenantId, scopes, audience: "not-edgeway" }),
		"wrong iss": await idpToken("ES256", { tenantId, scopes, issuer: "https://evil.example" }),
		garbage: "abc.def.ghi",
	};
}

/** Sends `sample` to a fresh app on a production-like env: no HS256 secret configured. */
function sendInProduction(sample: Sample, token: string): Promise<Response> {
	const production = { ...env, JWT_HS256_SECRET: undefined };
	const headers = new Headers(sample.init?.headers);
	headers.set("authorization", `Bearer ${token}`);
	return Promise.resolve(createApp().request(sample.path, { ...sample.init, headers }, production));
}

/**
 * Registers the suite for `group` over `operations` (the group's own, from the OpenAPI document).
 * Every check on every operation; a failure names the operation.
 */
export function securitySuite(group: RouteGroup, operations: readonly Operation[]): void {
	const { scope, errors: shape } = group;
	const fresh = (options: Parameters<typeof seedTenant>[0] = {}) => seedTenant({ tier: TIER, ...options });
	const token = (tenantId: string, scopes: Scope[] = [scope]) => hsToken({ tenantId, scopes });

	/** Sends every operation as `tenantId` with `bearer` and asserts the same refusal from each. */
	async function refusedEverywhere(tenantId: string, bearer: string, status: number, code: string): Promise<void> {
		for (const op of operations) {
			await expectRefusal(await send(requestFor(op, tenantId), { token: bearer }), shape, status, code, label(op));
		}
	}

	async function prepared(sample: SuccessSample, tenantId: string): Promise<Sample> {
		await sample.prepare?.(tenantId);
		return sample.request(tenantId);
	}

	describe(`security: ${group.name}`, () => {
		beforeAll(async () => {
			await serveJwks();
		});

		it(`has operations and sample requests, and the ${TIER} tier its callers use has the ${group.plane} plane`, () => {
			expect(operations.length).toBeGreaterThan(0);
			expect(group.samples.length).toBeGreaterThan(0);
			expect(tierPolicy(TIER).planes).toContain(group.plane);
		});

		it("answers 401 with a Bearer challenge without credentials, on every operation", async () => {
			const tenantId = await fresh();
			for (const op of operations) {
				await expectUnauthenticated(await send(requestFor(op, tenantId), {}), shape, label(op));
			}
		});

		it("answers 401 for a bad signature, expiry, alg none, key confusion, wrong aud, wrong iss and garbage, on every operation", async () => {
			const tenantId = await fresh();
			const bad = await badTokens(tenantId, scope);
			for (const op of operations) {
				for (const [name, bearer] of Object.entries(bad)) {
					await expectUnauthenticated(
						await send(requestFor(op, tenantId), { token: bearer }),
						shape,
						`${label(op)}: ${name}`,
					);
				}
			}
		});

		it("answers 401 for an unknown, revoked or expired API key or a wrong secret, on every operation", async () => {
			const tenantId = await fresh();
			const revoked = await seedKey(tenantId, { scopes: [scope], revokedAt: Date.now() - 1000 });
			const expired = await seedKey(tenantId, { scopes: [scope], expiresAt: Date.now() - 1000 });
			const valid = await seedKey(tenantId, { scopes: [scope] });
			const keys = {
				revoked: revoked.key,
				expired: expired.key,
				"wrong secret": `${valid.prefix}_${"0".repeat(64)}`,
				unknown: `ew_unknownunkno_${"1".repeat(64)}`,
			};
			for (const op of operations) {
				for (const [name, apiKey] of Object.entries(keys)) {
					await expectUnauthenticated(await send(requestFor(op, tenantId), { apiKey }), shape, `${label(op)}: ${name}`);
				}
			}
		});

		it("answers 401 for a valid token of a tenant that does not exist, on every operation", async () => {
			const ghost = `ghost-${crypto.randomUUID().slice(0, 8)}`;
			const bearer = await token(ghost);
			for (const op of operations) {
				await expectUnauthenticated(await send(requestFor(op, ghost), { token: bearer }), shape, label(op));
			}
		});

		it("refuses HS256 outright where no HS256 secret is configured (production), on every operation", async () => {
			const tenantId = await fresh();
			const confused = await keyConfusionToken(tenantId, scope);
			const real = await hsToken({ tenantId, scopes: [scope] });
			for (const op of operations) {
				for (const [name, bearer] of Object.entries({ "key confusion": confused, "our own HS256": real })) {
					const res = await sendInProduction(requestFor(op, tenantId), bearer);
					await expectUnauthenticated(res, shape, `${label(op)}: ${name}`);
				}
			}
		});

		it("answers 403 tenant-suspended for a suspended tenant with a valid token, on every operation", async () => {
			const tenantId = await fresh({ status: "suspended" });
			await refusedEverywhere(tenantId, await token(tenantId), 403, "tenant-suspended");
		});

		it(`answers 403 insufficient-scope without "${scope}" (holding every other scope), and passes the guards with it, on every operation`, async () => {
			const tenantId = await fresh();
			const others = await token(
				tenantId,
				SCOPES.filter((s) => s !== scope),
			);
			const right = await token(tenantId);
			for (const op of operations) {
				const refused = await send(requestFor(op, tenantId), { token: others });
				const challenge = refused.headers.get("www-authenticate");
				await expectRefusal(refused, shape, 403, "insufficient-scope", label(op));
				expect(challenge, label(op)).toContain(`error="insufficient_scope", scope="${scope}"`);
				await expectPastTheGuards(await send(requestFor(op, tenantId), { token: right }), label(op));
			}
		});

		const planeless = tierWithout(group.plane);
		if (planeless) {
			it(`answers 403 tier-not-allowed on the ${planeless} tier, which lacks the ${group.plane} plane, on every operation`, async () => {
				const tenantId = await seedTenant({ tier: planeless });
				await refusedEverywhere(tenantId, await token(tenantId), 403, "tier-not-allowed");
			});
		}

		it("answers 429 with Retry-After and RateLimit headers once the burst is spent, on every operation", async () => {
			for (const op of operations) {
				const tenantId = await fresh({ limits: { rate: { perSecond: 0.01, burst: 3 } } });
				const bearer = await token(tenantId);
				const admitted: number[] = [];
				let limited: Response | undefined;
				for (let i = 0; i < 5; i++) {
					const res = await send(requestFor(op, tenantId), { token: bearer });
					if (res.status === 429) {
						limited ??= res;
						if (limited !== res) await res.arrayBuffer();
					} else {
						await res.arrayBuffer();
						admitted.push(i);
					}
				}
				expect({ op: label(op), admitted }).toEqual({ op: label(op), admitted: [0, 1, 2] });
				if (!limited) throw new Error(`${label(op)}: no 429`);
				expect(Number(limited.headers.get("retry-after")), label(op)).toBeGreaterThanOrEqual(1);
				expect(limited.headers.get("ratelimit-policy"), label(op)).toContain('"burst";q=3;w=300');
				expect(limited.headers.get("ratelimit"), label(op)).toMatch(/"burst";r=0;t=\d+/);
				await expectRefusal(limited, shape, 429, "rate-limited", label(op));
			}
		});

		it("succeeds with a valid token, and with a valid API key as x-api-key and as Bearer (samples)", async () => {
			for (const sample of group.samples) {
				const tenantId = await fresh();
				const request = await prepared(sample, tenantId);
				const key = await seedKey(tenantId, { scopes: [scope] });
				const where = `${request.init?.method ?? "GET"} ${request.path}`;
				for (const auth of [{ token: await token(tenantId) }, { apiKey: key.key }, { token: key.key }]) {
					const res = await send(sample.request(tenantId), auth);
					expect(res.status, `${where}: ${await res.clone().text()}`).toBe(sample.okStatus);
					await res.arrayBuffer();
				}
			}
		});

		it("accepts the IdP's RS256 token where no HS256 secret is configured (samples)", async () => {
			for (const sample of group.samples) {
				const tenantId = await fresh();
				const request = await prepared(sample, tenantId);
				const res = await sendInProduction(request, await idpToken("RS256", { tenantId, scopes: [scope] }));
				expect(res.status, `${request.path}: ${await res.clone().text()}`).toBe(sample.okStatus);
			}
		});

		it("sees a suspension made after the token was issued (samples)", async () => {
			for (const sample of group.samples) {
				const tenantId = await fresh();
				await prepared(sample, tenantId);
				const bearer = await token(tenantId);
				const ok = await send(sample.request(tenantId), { token: bearer });
				expect(ok.status, await ok.clone().text()).toBe(sample.okStatus);
				await ok.arrayBuffer();
				await database(env.DB).update(tenants).set({ status: "suspended" }).where(eq(tenants.id, tenantId)).run();
				// The tenant view is cached for a few seconds; this isolate's copy is dropped here the way the admin API does.
				const { forgetTenant } = await import("../../src/auth");
				forgetTenant(tenantId);
				await expectRefusal(
					await send(sample.request(tenantId), { token: bearer }),
					shape,
					403,
					"tenant-suspended",
					sample.request(tenantId).path,
				);
			}
		});

		const { tenancy } = group;
		if (typeof tenancy === "function") {
			it("keeps each tenant to its own: another tenant's caller is refused or not shown what is not its own", async () => {
				const caller = async () => {
					const tenantId = await fresh();
					return { tenantId, token: await token(tenantId) };
				};
				await tenancy({
					owner: await caller(),
					stranger: await caller(),
					send: (bearer, sample) => send(sample, { token: bearer }),
					expectRefused: async (res, status, code) => {
						await expectRefusal(res, shape, status, code, "wrong tenant");
					},
				});
			});
		}
	});
}
