/**
 * Content guardrails for the LLM plane: detectors for secrets and API keys, card numbers, e-mail
 * addresses, phone numbers and custom patterns, each configured to block or redact, applied to chat
 * requests, embeddings inputs, completions and streamed output.
 *
 * schema.ts (the configured checks) ─► pattern-safety.ts (custom patterns refused unless safe)
 * detectors.ts (the built-ins) ─► compile.ts (checks → detectors) ─► redact.ts (matches → redacted text)
 *   ─► scan.ts (whole requests and completions) and stream-guard.ts (streamed text).
 */
export { type CompiledCheck, type CompiledGuardrails, compileGuardrails } from "./compile";
export { patternProblem } from "./pattern-safety";
export { type Finding, type ScanResult, scanText } from "./redact";
export { checkChatInput, checkChatOutput, checkEmbeddingsInput, type EmbeddingsInput } from "./scan";
export {
	GUARDRAIL_KINDS,
	type GuardrailCheck,
	GuardrailCheckSchema,
	type GuardrailKind,
	type Guardrails,
	GuardrailsSchema,
} from "./schema";
export {
	DEFAULT_LOOK_BEHIND,
	MAX_LOOK_BEHIND,
	STREAM_CONTEXT_CHARS,
	StreamGuard,
	type StreamGuardOptions,
	type StreamStep,
} from "./stream-guard";
