/** Output guardrails over a stream's deltas: the content and each tool call's arguments, each through a StreamGuard of its own. */
import { type CompiledGuardrails, compileGuardrails, type GuardrailCheck, StreamGuard } from "../guardrails";
import type { ChatCompletionChunk } from "../types";

export type Delta = ChatCompletionChunk["choices"][number]["delta"];

/** The delta to send, or the check that blocked. */
export type Scanned = { delta: Delta; blocked: null } | { delta: null; blocked: string };

/** The guard of a stream's deltas, or null when there are no output checks (every delta passes as it is). */
export function deltaGuard(checks: readonly GuardrailCheck[]): DeltaGuard | null {
	return checks.length > 0 ? new DeltaGuard(compileGuardrails(checks)) : null;
}

/**
 * Holds back what may still turn out part of a match and sends on the rest, redacted. Guards start
 * fresh after each finish: a server that sends more after a finish is scanned too.
 */
export class DeltaGuard {
	readonly #compiled: CompiledGuardrails;
	#content: StreamGuard;
	/** One guard per tool-call index. */
	readonly #toolArgs = new Map<number, StreamGuard>();

	constructor(compiled: CompiledGuardrails) {
		this.#compiled = compiled;
		this.#content = new StreamGuard(compiled);
	}

	/** Scans one delta. With `final`, every guard is ended and what it held is released. */
	scan(delta: Delta, final: boolean): Scanned {
		const out: Delta = { ...delta };
		const blocked = this.#push(delta, out) ?? (final ? this.#end(out) : null);
		if (blocked !== null) return { delta: null, blocked };
		if (out.content === "" && !out.role) delete out.content;
		if (out.tool_calls?.length === 0) delete out.tool_calls;
		return { delta: out, blocked: null };
	}

	/** Pushes the delta's content and tool-call arguments through their guards into `out`; the check that blocked, or null. */
	#push(delta: Delta, out: Delta): string | null {
		if (typeof delta.content === "string" && delta.content.length > 0) {
			const step = this.#content.push(delta.content);
			if (step.blocked) return step.blocked.check;
			out.content = step.emit;
		}
		if (!delta.tool_calls) return null;
		out.tool_calls = [];
		for (const call of delta.tool_calls) {
			const guard = this.#toolGuard(call.index);
			const args = call.function?.arguments;
			if (!args) {
				out.tool_calls.push(call);
				continue;
			}
			const step = guard.push(args);
			if (step.blocked) return step.blocked.check;
			out.tool_calls.push({ ...call, function: { ...call.function, arguments: step.emit } });
		}
		return null;
	}

	/** Ends every guard, appending what each still held to `out`, and starts fresh ones; the check that blocked, or null. */
	#end(out: Delta): string | null {
		const tail = this.#content.end();
		if (tail.blocked) return tail.blocked.check;
		out.content = (out.content ?? "") + tail.emit;
		for (const [index, guard] of this.#toolArgs) {
			const rest = guard.end();
			if (rest.blocked) return rest.blocked.check;
			if (rest.emit) out.tool_calls = [...(out.tool_calls ?? []), { index, function: { arguments: rest.emit } }];
		}
		this.#content = new StreamGuard(this.#compiled);
		this.#toolArgs.clear();
		return null;
	}

	#toolGuard(index: number): StreamGuard {
		let guard = this.#toolArgs.get(index);
		if (!guard) {
			guard = new StreamGuard(this.#compiled);
			this.#toolArgs.set(index, guard);
		}
		return guard;
	}
}
