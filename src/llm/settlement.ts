/**
 * After the answer: what a request settles (its budget reservation and its usage record), the cache
 * write of a good answer, and the audit record and refusal of a guardrail block. All of it runs in
 * the background or before the answer goes out; none of it can turn an answer into a 500.
 */
import { newEvent, publish } from "../events";
import { ApiError, log, waitUntil } from "../http";
import { errorText } from "../lib";
import { writeCache } from "./cache";
import { costMicroUsd, priceOf, type Target } from "./config";
import { afterResponse, type Plane } from "./plane";
import type { Served } from "./router";
import { type Reservation, settleBudget } from "./spend";
import type { ChatCompletion, EmbeddingsResponse } from "./types";
import { recordUsage, type UsageRecord } from "./usage";

export type Operation = UsageRecord["operation"];

/** What a request asked for: the operation, and the alias or `provider/model` the caller named. */
export interface Asked {
	operation: Operation;
	requested: string;
}

export interface Outcome {
	target: Target | null;
	promptTokens: number;
	completionTokens: number;
	estimated: boolean;
	status: number;
	cacheHit: boolean;
	byok: boolean;
	attempts: number;
}

/** What a request reports: the fields it leaves out mean "nothing happened" (no target, no tokens, no attempt). */
export type OutcomeInput = Pick<Outcome, "status"> & Partial<Outcome>;

/** Who served a request: the part of a router answer its usage record names. */
export type ServedBy = Pick<Served<unknown>, "target" | "attempts" | "byok">;

/** The status a thrown error is answered with. */
function statusOf(err: unknown): number {
	return err instanceof ApiError ? err.status : 500;
}

/**
 * One request's settlement: its budget reservation (null when the caller has no budget) and its usage
 * record. A request settles exactly once, whichever way it ends: later calls do nothing.
 */
export class Bill {
	readonly #plane: Plane;
	readonly #asked: Asked;
	readonly #reservation: Reservation | null;
	#settled = false;

	constructor(plane: Plane, asked: Asked, reservation: Reservation | null) {
		this.#plane = plane;
		this.#asked = asked;
		this.#reservation = reservation;
	}

	/** The alias or `provider/model` the caller named (what the usage and audit records say was asked for). */
	get requested(): string {
		return this.#asked.requested;
	}

	/** Settles the reservation with what was spent and records the usage (both in the background). */
	settle(input: OutcomeInput): void {
		if (this.#settled) return;
		this.#settled = true;
		const o: Outcome = {
			target: null,
			promptTokens: 0,
			completionTokens: 0,
			estimated: false,
			cacheHit: false,
			byok: false,
			attempts: 0,
			...input,
		};
		const plane = this.#plane;
		const price = o.target ? priceOf(plane.cfg, o.target.provider, o.target.model) : null;
		// A cached answer costs no provider call: it is recorded with its tokens, charged nothing.
		const cost = o.cacheHit ? 0 : costMicroUsd(price, o.promptTokens, o.completionTokens);
		const tokens = o.cacheHit ? 0 : o.promptTokens + o.completionTokens;
		if (this.#reservation) settleBudget(plane, this.#reservation, { tokens, microUsd: cost });
		this.#record(o, cost);
	}

	/** Settles a request that failed with `err`, naming who served it when an upstream had answered. */
	failed(err: unknown, served?: ServedBy): void {
		this.settle({
			status: statusOf(err),
			...(served ? { target: served.target, byok: served.byok, attempts: served.attempts } : {}),
		});
	}

	#record(o: Outcome, cost: number): void {
		const { c, principal } = this.#plane;
		const record: Omit<UsageRecord, "id" | "time"> = {
			actor: principal.actor,
			...(principal.keyId ? { keyId: principal.keyId } : {}),
			requestId: c.get("requestId"),
			operation: this.#asked.operation,
			requested: this.#asked.requested,
			provider: o.target?.provider ?? null,
			model: o.target?.model ?? null,
			promptTokens: o.promptTokens,
			completionTokens: o.completionTokens,
			estimated: o.estimated,
			costMicroUsd: cost,
			latencyMs: Date.now() - this.#plane.started,
			status: o.status,
			cacheHit: o.cacheHit,
			byok: o.byok,
			attempts: o.attempts,
		};
		const requestId = record.requestId;
		// Recorded after the answer (its checks cost the answer nothing); what it says was fixed above.
		afterResponse(this.#plane, () => {
			try {
				recordUsage(c.env, (p) => waitUntil(c, p), {
					tenantId: principal.tenantId,
					traceparent: this.#plane.traceparent,
					record,
				});
			} catch (err) {
				// The answer stands; a usage record that cannot be made is logged, never the caller's 500.
				log("error", "usage not recorded", { requestId, reason: errorText(err) });
			}
			return undefined;
		});
	}
}

/** Stores a good answer under its cache key, after the response. */
export function storeAnswer(
	plane: Plane,
	key: string,
	body: ChatCompletion | EmbeddingsResponse,
	target: Pick<Target, "provider" | "model">,
): void {
	const value = { body, provider: target.provider, model: target.model };
	afterResponse(plane, () => writeCache(key, value, plane.cacheTtlS));
}

export function contentBlocked(where: "input" | "output", check: string): ApiError {
	return new ApiError(
		"content-blocked",
		`The ${where === "input" ? "request" : "answer"} was blocked by the \`${check}\` check.`,
	);
}

/**
 * Writes the SENSITIVE_CONTENT_BLOCKED audit record (through the events queue, before the answer
 * goes out). It names the check and where it fired, never the text.
 */
export async function auditBlock(
	plane: Plane,
	where: "input" | "output",
	check: string,
	requested: string,
): Promise<void> {
	const { c, principal } = plane;
	try {
		await publish(
			c.env,
			newEvent({
				type: "audit.record",
				tenantId: principal.tenantId,
				source: "llm",
				traceparent: plane.traceparent,
				data: {
					actor: principal.actor,
					action: "SENSITIVE_CONTENT_BLOCKED",
					target: `llm:${requested}`,
					requestId: c.get("requestId"),
					metadata: { where, check },
				},
			}),
		);
	} catch (err) {
		// The block stands either way; a lost record is an operator's alarm, never the caller's 500.
		log("error", "content block not audited", { check, requestId: c.get("requestId"), reason: errorText(err) });
	}
}

/** An input refused by a guardrail: recorded as a usage record of its own (no provider, no tokens), audited, thrown. */
export async function refuseInput(plane: Plane, asked: Asked, check: string): Promise<never> {
	new Bill(plane, asked, null).settle({ status: 400 });
	await auditBlock(plane, "input", check, asked.requested);
	throw contentBlocked("input", check);
}

/** An answer withheld by a guardrail: settled as a 400 with what was spent on it, audited, thrown. */
export async function refuseOutput(plane: Plane, bill: Bill, spent: OutcomeInput, check: string): Promise<never> {
	bill.settle({ ...spent, status: 400 });
	await auditBlock(plane, "output", check, bill.requested);
	throw contentBlocked("output", check);
}
