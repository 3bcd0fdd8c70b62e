/**
 * The guardrails every LLM configuration has unless it sets its own: secrets and card numbers never
 * pass. No imports and only erasable syntax, so scripts/dev.mjs can load it too (for its banner).
 */
export const SHIPPED_GUARDRAILS = {
	maxPromptChars: 200_000,
	input: [
		{ kind: "secrets", action: "block" },
		{ kind: "card-numbers", action: "block" },
	],
	output: [
		{ kind: "secrets", action: "redact" },
		{ kind: "card-numbers", action: "redact" },
	],
} as const;
