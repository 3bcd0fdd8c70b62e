/** The LLM plane's configuration: every configuration keeps the shipped guardrails unless it sets them, and provider URLs obey the outbound guard where it is on. */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { llmConfig, SHIPPED_GUARDRAILS } from "../../src/llm/config";

/** A custom configuration, as `npm run dev -- --llm-stub` or a local set-up writes one. */
function custom(extra: Record<string, unknown> = {}, baseUrl = "http://127.0.0.1:9/v1") {
	return {
		providers: { local: { kind: "openai-compatible", baseUrl, keyless: true } },
		aliases: { fast: { targets: [{ provider: "local", model: "m" }] } },
		...extra,
	};
}

const withConfig = (cfg: unknown, vars: Partial<Env> = {}): Env => ({
	...env,
	LLM_CONFIG: JSON.stringify(cfg),
	...vars,
});

describe("llmConfig guardrails", () => {
	it("gives a custom configuration that does not mention guardrails the shipped ones", () => {
		const cfg = llmConfig(withConfig(custom()));
		expect(cfg.guardrails).toEqual(SHIPPED_GUARDRAILS);
		expect(cfg.guardrails.input.map((c) => `${c.kind}:${c.action}`)).toEqual(["secrets:block", "card-numbers:block"]);
		expect(cfg.guardrails.output.map((c) => `${c.kind}:${c.action}`)).toEqual([
			"secrets:redact",
			"card-numbers:redact",
		]);
	});

	it("gives the built-in default the shipped guardrails", () => {
		expect(llmConfig({ ...env, LLM_CONFIG: "" }).guardrails).toEqual(SHIPPED_GUARDRAILS);
	});

	it("turns the checks off only when the configuration says `guardrails: false`", () => {
		const cfg = llmConfig(withConfig(custom({ guardrails: false })));
		expect(cfg.guardrails).toEqual({ maxPromptChars: SHIPPED_GUARDRAILS.maxPromptChars, input: [], output: [] });
	});

	it("replaces only the fields a configuration gives", () => {
		const onlyInput = llmConfig(withConfig(custom({ guardrails: { input: [] } })));
		expect(onlyInput.guardrails.input).toEqual([]);
		expect(onlyInput.guardrails.output).toEqual(SHIPPED_GUARDRAILS.output);
		const onlySize = llmConfig(withConfig(custom({ guardrails: { maxPromptChars: 1000 } })));
		expect(onlySize.guardrails).toEqual({ ...SHIPPED_GUARDRAILS, maxPromptChars: 1000 });
		const emails = [{ kind: "emails", action: "redact" }];
		expect(llmConfig(withConfig(custom({ guardrails: { output: emails } }))).guardrails).toEqual({
			...SHIPPED_GUARDRAILS,
			output: emails,
		});
	});

	it("still refuses a malformed guardrails value", () => {
		expect(() => llmConfig(withConfig(custom({ guardrails: true })))).toThrow(/Invalid LLM_CONFIG: guardrails/);
	});
});

describe("llmConfig provider URLs", () => {
	it("accepts a loopback provider where ALLOW_PRIVATE_OUTBOUND is on (local development, tests)", () => {
		expect(llmConfig(withConfig(custom())).providers.local?.baseUrl).toBe("http://127.0.0.1:9/v1");
	});

	it("refuses a loopback or metadata provider where it is off (staging, production)", () => {
		expect(() => llmConfig(withConfig(custom(), { ALLOW_PRIVATE_OUTBOUND: "false" }))).toThrow(
			"Invalid LLM_CONFIG: providers.local.baseUrl: points at a loopback address",
		);
		expect(() =>
			llmConfig(withConfig(custom({}, "http://169.254.169.254/v1"), { ALLOW_PRIVATE_OUTBOUND: "false" })),
		).toThrow(/providers\.local\.baseUrl: points at a link-local or cloud metadata address/);
		expect(llmConfig({ ...env, LLM_CONFIG: "", ALLOW_PRIVATE_OUTBOUND: "false" }).providers.openai?.baseUrl).toBe(
			"https://api.openai.com/v1",
		);
	});
});
