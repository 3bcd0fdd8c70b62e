/**
 * The LLM plane end to end: a stub upstream (llm-stub.ts) on 127.0.0.1 and the built gateway under
 * Miniflare configured to route to it. The stub picks its behaviour from the model name, so the
 * configuration below maps aliases onto scenario models. Tenants: `acme` (enterprise: any target,
 * cache, BYOK), `globex` (pro: fast/smart/embed, cache, BYOK), `freeco` (free: no LLM plane).
 * Used by the e2e tests and by bench/llm.mjs (plain Node: keep the syntax erasable, imports with `.ts`).
 */
import { type Gateway, type GatewayOptions, startGateway } from "./gateway.ts";
import { type LlmStub, startLlmStub } from "./llm-stub.ts";

export const GATEWAY_OPENAI_KEY = "sk-gateway-openai-test-key";
export const GATEWAY_ANTHROPIC_KEY = "sk-ant-gateway-test-key";

export interface LlmSetup {
	gw: Gateway;
	stub: LlmStub;
	/** Mints a JWT for a tenant with the `llm` scope (and `admin`, for the BYOK and breaker APIs). */
	token(tenantId: string, scopes?: string[]): Promise<string>;
	dispose(): Promise<void>;
}

/** The plane's configuration pointing at the stub. */
export function llmConfigFor(
	stub: Pick<LlmStub, "openaiBaseUrl" | "keylessOpenaiBaseUrl" | "anthropicBaseUrl">,
	overrides: Record<string, unknown> = {},
): Record<string, unknown> {
	return {
		providers: {
			openai: { kind: "openai", baseUrl: stub.openaiBaseUrl, apiKeySecret: "OPENAI_API_KEY" },
			anthropic: { kind: "anthropic", baseUrl: stub.anthropicBaseUrl, apiKeySecret: "ANTHROPIC_API_KEY" },
			// The same stub under other names, for the failure scenarios: each has its own gateway-wide
			// breaker, so failures provoked on purpose in one test never open a breaker another test relies on.
			failing: { kind: "openai", baseUrl: stub.openaiBaseUrl, apiKeySecret: "OPENAI_API_KEY" },
			flaky: { kind: "openai", baseUrl: stub.openaiBaseUrl, apiKeySecret: "OPENAI_API_KEY" },
			unstable: { kind: "openai", baseUrl: stub.openaiBaseUrl, apiKeySecret: "OPENAI_API_KEY" },
			local: { kind: "openai-compatible", baseUrl: stub.keylessOpenaiBaseUrl, keyless: true },
			"workers-ai": { kind: "workers-ai" },
		},
		aliases: {
			// Workers AI is remote-only: locally it is skipped and the next target serves.
			fast: {
				targets: [
					{ provider: "workers-ai", model: "@cf/meta/llama-3.1-8b-instruct-fast" },
					{ provider: "openai", model: "ok", priority: 1 },
				],
			},
			smart: { targets: [{ provider: "anthropic", model: "ok" }] },
			fallback: {
				targets: [
					{ provider: "failing", model: "error" },
					{ provider: "anthropic", model: "ok", priority: 1 },
				],
			},
			flaky: {
				targets: [
					{ provider: "flaky", model: "flaky" },
					{ provider: "local", model: "ok", priority: 1 },
				],
			},
			embed: { kind: "embeddings", targets: [{ provider: "openai", model: "text-embedding-stub" }] },
		},
		prices: {
			"openai/ok": { input: 1, output: 2 },
			"anthropic/ok": { input: 3, output: 15 },
			"openai/slow-first-byte": { input: 1, output: 2 },
			"openai/held": { input: 1, output: 2 },
		},
		routing: {
			attemptTimeoutMs: 1000,
			deadlineMs: 8000,
			retriesPerTarget: 1,
			backoffBaseMs: 10,
			backoffMaxMs: 50,
			retryAfterCapMs: 500,
		},
		breaker: { consecutiveFailures: 3, cooldownMs: 1500, halfOpenProbes: 1, minimumVolume: 1000 },
		guardrails: {
			maxPromptChars: 20_000,
			input: [
				{ kind: "secrets", action: "block" },
				{ kind: "emails", action: "redact" },
				{ kind: "pattern", action: "block", pattern: "project[- ]bluebird", name: "codename" },
			],
			output: [
				{ kind: "card-numbers", action: "block" },
				{ kind: "emails", action: "redact" },
			],
		},
		...overrides,
	};
}

export async function startLlmGateway(
	options: { config?: Record<string, unknown>; gateway?: GatewayOptions } = {},
): Promise<LlmSetup> {
	const stub = await startLlmStub();
	let gw: Gateway;
	try {
		gw = await startGateway({
			...options.gateway,
			bindings: {
				LLM_CONFIG: JSON.stringify(llmConfigFor(stub, options.config)),
				OPENAI_API_KEY: GATEWAY_OPENAI_KEY,
				ANTHROPIC_API_KEY: GATEWAY_ANTHROPIC_KEY,
				...options.gateway?.bindings,
			},
		});
	} catch (err) {
		await stub.close();
		throw err;
	}
	await gw.seedTenant({ id: String(gw.vars.OPERATOR_TENANT), tier: "enterprise" });
	await gw.seedTenant({ id: "acme", tier: "enterprise" });
	await gw.seedTenant({ id: "globex", tier: "pro" });
	await gw.seedTenant({ id: "freeco", tier: "free" });
	return {
		gw,
		stub,
		token: (tenantId, scopes = ["llm", "admin"]) => gw.mintJwt({ tenantId, scopes, sub: `${tenantId}-user` }),
		async dispose() {
			await gw.dispose();
			await stub.close();
		},
	};
}
