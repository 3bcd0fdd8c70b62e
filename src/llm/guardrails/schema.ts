/**
 * The guardrails of an LLM configuration, as configured: which checks run on input and on output, and
 * the prompt size limit. Custom patterns are refused here unless {@link patternProblem} finds them safe.
 */
import { z } from "zod";
import { SHIPPED_GUARDRAILS } from "../shipped-guardrails";
import { patternProblem } from "./pattern-safety";

/** Names of pattern checks, and of providers and aliases in the LLM configuration. */
export const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export const GUARDRAIL_KINDS = ["secrets", "card-numbers", "emails", "phones", "pattern"] as const;
export type GuardrailKind = (typeof GUARDRAIL_KINDS)[number];

export const GuardrailCheckSchema = z
	.object({
		kind: z.enum(GUARDRAIL_KINDS),
		action: z.enum(["block", "redact"]),
		/** For `pattern`: a JavaScript regular expression source, matched globally. */
		pattern: z.string().min(1).max(1000).optional(),
		/** For `pattern`: the check's name in problems and audit records. */
		name: z.string().regex(NAME).optional(),
	})
	.strict()
	.refine((c) => c.kind !== "pattern" || (c.pattern && c.name), { message: "a pattern check needs pattern and name" })
	.refine(
		(c) => {
			if (!c.pattern) return true;
			try {
				new RegExp(c.pattern, "g");
				return true;
			} catch {
				return false;
			}
		},
		{ message: "pattern is not a valid regular expression" },
	)
	.refine((c) => !c.pattern || patternProblem(c.pattern) === null, {
		message: "pattern must use bounded quantifiers ({1,64}) and no repeated group holding a quantifier or |",
	});
export type GuardrailCheck = z.infer<typeof GuardrailCheckSchema>;

/**
 * `guardrails` of a configuration. Left out: {@link SHIPPED_GUARDRAILS}. An object: each field it
 * gives replaces the shipped one, the others stay (`"input": []` drops the input checks only).
 * `false`: no input or output checks (the prompt size limit stays at its default).
 */
export const GuardrailsSchema = z.union([
	z.literal(false).transform(() => ({ maxPromptChars: SHIPPED_GUARDRAILS.maxPromptChars, input: [], output: [] })),
	z
		.object({
			/** Largest prompt (characters of message text, all messages) accepted; 0 = no limit. */
			maxPromptChars: z.number().int().min(0).default(SHIPPED_GUARDRAILS.maxPromptChars),
			input: z.array(GuardrailCheckSchema).default(() => [...SHIPPED_GUARDRAILS.input]),
			output: z.array(GuardrailCheckSchema).default(() => [...SHIPPED_GUARDRAILS.output]),
		})
		.strict(),
]);
export type Guardrails = z.infer<typeof GuardrailsSchema>;
