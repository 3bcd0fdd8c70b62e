/** The guardrails applied to whole texts: chat requests, embeddings inputs and completions. */
import { exceedsJsonDepth } from "../../lib";
import type { ChatCompletion, ChatMessage, ChatRequest, EmbeddingsRequest, ToolCall } from "../types";
import { type CompiledGuardrails, compileGuardrails } from "./compile";
import { type Finding, outcome, redactInto, zeros } from "./redact";
import type { GuardrailCheck, Guardrails } from "./schema";

/** Scans several texts of one request or completion; findings add up across them. */
class Scanner {
	readonly #g: CompiledGuardrails;
	readonly #counts: number[];

	constructor(g: CompiledGuardrails) {
		this.#g = g;
		this.#counts = zeros(g);
	}

	text(text: string): string {
		return redactInto(this.#g, text, this.#counts);
	}

	/**
	 * Tool-call arguments are JSON: their string values are scanned decoded (a `\u0040` is an `@`) and
	 * the JSON re-encoded when one changed, so it stays valid. Text that is not JSON, or nests deeper
	 * than MAX_JSON_DEPTH, is scanned raw.
	 */
	arguments(args: string): string {
		// The reviver below walks the parsed value recursively: arguments nested too deep are scanned raw.
		if (exceedsJsonDepth(args)) return this.text(args);
		const counts = zeros(this.#g);
		let changed = false;
		try {
			const value: unknown = JSON.parse(args, (_key, v: unknown) => {
				if (typeof v !== "string") return v;
				const redacted = redactInto(this.#g, v, counts);
				changed ||= redacted !== v;
				return redacted;
			});
			const out = changed ? JSON.stringify(value) : args;
			counts.forEach((n, i) => {
				this.#counts[i] = (this.#counts[i] ?? 0) + n;
			});
			return out;
		} catch {
			return this.text(args);
		}
	}

	parts<P extends { type: string; text?: string }>(parts: P[]): P[] {
		let changed = false;
		const out = parts.map((p) => {
			if (p.type !== "text" || typeof p.text !== "string") return p;
			const text = this.text(p.text);
			if (text === p.text) return p;
			changed = true;
			return { ...p, text };
		});
		return changed ? out : parts;
	}

	content<P extends { type: string; text?: string }>(content: string | P[]): string | P[] {
		return typeof content === "string" ? this.text(content) : this.parts(content);
	}

	toolCalls(calls: ToolCall[]): ToolCall[] {
		let changed = false;
		const out = calls.map((c) => {
			const args = this.arguments(c.function.arguments);
			if (args === c.function.arguments) return c;
			changed = true;
			return { ...c, function: { ...c.function, arguments: args } };
		});
		return changed ? out : calls;
	}

	result(): { findings: Finding[]; blocked: Finding | null } {
		return outcome(this.#g, this.#counts);
	}
}

function scanMessage(m: ChatMessage, s: Scanner): ChatMessage {
	switch (m.role) {
		case "assistant": {
			const content = m.content == null ? m.content : s.content(m.content);
			const toolCalls = m.tool_calls && s.toolCalls(m.tool_calls);
			return content === m.content && toolCalls === m.tool_calls ? m : { ...m, content, tool_calls: toolCalls };
		}
		case "user": {
			const content = s.content(m.content);
			return content === m.content ? m : { ...m, content };
		}
		default: {
			const content = s.content(m.content);
			return content === m.content ? m : { ...m, content };
		}
	}
}

/** Characters of message text in a request: contents, text parts and tool-call arguments. */
function promptChars(messages: readonly ChatMessage[]): number {
	let n = 0;
	for (const m of messages) {
		if (typeof m.content === "string") n += m.content.length;
		else for (const p of m.content ?? []) if (p.type === "text") n += p.text.length;
		if (m.role === "assistant") for (const c of m.tool_calls ?? []) n += c.function.arguments.length;
	}
	return n;
}

function sizeBlock(): { findings: Finding[]; blocked: Finding } {
	const blocked: Finding = { check: "max-prompt-size", action: "block", count: 1 };
	return { findings: [blocked], blocked };
}

/**
 * Applies the input guardrails to a chat request: the prompt size first (over `maxPromptChars` →
 * blocked as `max-prompt-size`, nothing scanned), then every message's text, text parts and tool-call
 * arguments. Returns a redacted copy; the input is never mutated, and is returned itself when nothing
 * changed. The caller refuses the request when `blocked` is set.
 */
export function checkChatInput(
	request: ChatRequest,
	guardrails: Guardrails,
): { request: ChatRequest; findings: Finding[]; blocked: Finding | null } {
	if (guardrails.maxPromptChars > 0 && promptChars(request.messages) > guardrails.maxPromptChars) {
		return { request, ...sizeBlock() };
	}
	const s = new Scanner(compileGuardrails(guardrails.input));
	const messages = request.messages.map((m) => scanMessage(m, s));
	const changed = messages.some((m, i) => m !== request.messages[i]);
	return { request: changed ? { ...request, messages } : request, ...s.result() };
}

export type EmbeddingsInput = EmbeddingsRequest["input"];

/** The request schema makes an input list homogeneous, so its first element tells its type. */
function isTextList(input: Exclude<EmbeddingsInput, string>): input is string[] {
	return typeof input[0] === "string";
}

/**
 * Applies the input guardrails to an embeddings input: size (total characters of its strings) and
 * scan, as for chat. Token-id inputs (`number[]`, `number[][]`) carry no text and pass unchanged.
 */
export function checkEmbeddingsInput(
	input: EmbeddingsInput,
	guardrails: Guardrails,
): { input: EmbeddingsInput; findings: Finding[]; blocked: Finding | null } {
	if (typeof input !== "string" && !isTextList(input)) return { input, findings: [], blocked: null };
	const texts = typeof input === "string" ? [input] : input;
	let chars = 0;
	for (const t of texts) chars += t.length;
	if (guardrails.maxPromptChars > 0 && chars > guardrails.maxPromptChars) return { input, ...sizeBlock() };
	const s = new Scanner(compileGuardrails(guardrails.input));
	const scanned = texts.map((t) => s.text(t));
	const changed = scanned.some((t, i) => t !== texts[i]);
	const out = !changed ? input : typeof input === "string" ? (scanned[0] ?? "") : scanned;
	return { input: out, ...s.result() };
}

/**
 * Applies output checks to a completion: every choice's content and tool-call arguments. Returns a
 * redacted copy (the input itself when nothing changed); the caller withholds it when `blocked` is set.
 */
export function checkChatOutput(
	completion: ChatCompletion,
	checks: readonly GuardrailCheck[],
): { completion: ChatCompletion; findings: Finding[]; blocked: Finding | null } {
	const s = new Scanner(compileGuardrails(checks));
	let changed = false;
	const choices = completion.choices.map((c) => {
		const content = c.message.content === null ? null : s.text(c.message.content);
		const toolCalls = c.message.tool_calls && s.toolCalls(c.message.tool_calls);
		if (content === c.message.content && toolCalls === c.message.tool_calls) return c;
		changed = true;
		return { ...c, message: { ...c.message, content, tool_calls: toolCalls } };
	});
	return { completion: changed ? { ...completion, choices } : completion, ...s.result() };
}
