/** The per-tenant hash chain: a record's canonical form, its hash, and the walk that checks a chain. */

import { canonicalJson, toHex } from "../lib";

/** `prev_hash` of a tenant's first record. */
export const GENESIS_HASH = "";

/** Bumped if the canonical form ever changes, so old and new hashes can never be confused. */
const CHAIN_VERSION = "edgeway.audit.v1";

/** Hashes of the last verified records kept while walking, to tell an inserted record from a deleted one. */
const RECENT_HASHES = 8;

/** What a record's hash covers. */
export interface ChainedFields {
	tenantId: string;
	seq: number;
	prevHash: string;
	actor: string;
	action: string;
	target: string | null;
	requestId: string | null;
	/** As it reads back from the database (see {@link normalizeJson}). */
	metadata: unknown;
	createdAt: number;
	eventId: string | null;
}

/**
 * The value as it will read back after a JSON round trip through the database: `undefined` members
 * dropped, dates as strings, `-0` as `0`. Hash this, store this, and verification sees the same thing.
 */
export function normalizeJson<T>(value: T): T | null {
	if (value === undefined || value === null) return null;
	const text = JSON.stringify(value);
	return text === undefined ? null : (JSON.parse(text) as T);
}

/** SHA-256 (hex) over the previous hash and the record's canonical fields. */
export async function chainHash(r: ChainedFields): Promise<string> {
	const canonical = canonicalJson([
		CHAIN_VERSION,
		r.prevHash,
		r.tenantId,
		r.seq,
		r.actor,
		r.action,
		r.target,
		r.requestId,
		normalizeJson(r.metadata),
		r.createdAt,
		r.eventId,
	]);
	return toHex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical)));
}

/**
 * How a chain is broken at `firstBrokenSeq`:
 * - `modified`: the record's fields no longer hash to its stored hash;
 * - `deleted`: records are missing (a gap in seq, or the record points at a hash that is not in the log);
 * - `inserted`: a record that no chain writer wrote (a skipped or repeated seq, or slipped in between two records).
 */
export type ChainBreak = "modified" | "deleted" | "inserted";

export interface ChainReport {
	ok: boolean;
	/** Chained records found intact (all of them when `ok`). */
	records: number;
	firstBrokenSeq?: number;
	reason?: ChainBreak;
	/** The last intact record: publish its hash elsewhere to detect a truncated tail later. */
	head: { seq: number; hash: string } | null;
}

/** A stored record exactly as the database returns it (columns may have been tampered with). */
export interface StoredRecord {
	tenant_id: unknown;
	seq: unknown;
	prev_hash: unknown;
	hash: unknown;
	actor: unknown;
	action: unknown;
	target: unknown;
	request_id: unknown;
	/** JSON text, or NULL. */
	metadata: unknown;
	created_at: unknown;
	event_id: unknown;
}

const str = (v: unknown): v is string => typeof v === "string";
const strOrNull = (v: unknown): v is string | null => v === null || typeof v === "string";

/** The hash the record's own fields give, or undefined when they cannot be what a writer stored. */
async function recomputed(r: StoredRecord): Promise<string | undefined> {
	if (!str(r.tenant_id) || !Number.isSafeInteger(r.seq) || !str(r.prev_hash) || !str(r.actor) || !str(r.action)) {
		return undefined;
	}
	if (!strOrNull(r.target) || !strOrNull(r.request_id) || !strOrNull(r.event_id) || !strOrNull(r.metadata)) {
		return undefined;
	}
	if (!Number.isSafeInteger(r.created_at)) return undefined;
	let metadata: unknown = null;
	if (r.metadata !== null) {
		try {
			metadata = JSON.parse(r.metadata);
		} catch {
			return undefined;
		}
	}
	return chainHash({
		tenantId: r.tenant_id,
		seq: r.seq as number,
		prevHash: r.prev_hash,
		actor: r.actor,
		action: r.action,
		target: r.target,
		requestId: r.request_id,
		metadata,
		createdAt: r.created_at as number,
		eventId: r.event_id,
	});
}

/**
 * Checks one tenant's chain, fed its records in ascending seq order (records without a seq are not
 * part of the chain and must not be fed). Stops at the first break.
 */
export class ChainVerifier {
	#expectedSeq = 1;
	/** The last intact records, oldest first: { seq, hash }. */
	#recent: Array<{ seq: number; hash: string }> = [];
	#records = 0;
	#break: { seq: number; reason: ChainBreak } | undefined;

	/** Checks the next record; returns false once the chain is broken (later records are not looked at). */
	async add(r: StoredRecord): Promise<boolean> {
		if (this.#break) return false;
		const expected = this.#expectedSeq;
		const seq = Number.isSafeInteger(r.seq) ? (r.seq as number) : undefined;
		const selfConsistent = (await recomputed(r)) === r.hash;
		const linked = r.prev_hash === (this.#recent.at(-1)?.hash ?? GENESIS_HASH);
		if (seq === undefined) {
			this.#break = { seq: expected, reason: "modified" };
		} else if (seq > expected) {
			// A gap. If the record still points at the last intact one, nothing was chained in between:
			// this record's seq is not what a writer gave it.
			if (!linked) this.#break = { seq: expected, reason: "deleted" };
			else this.#break = { seq, reason: selfConsistent ? "inserted" : "modified" };
		} else if (seq < expected) {
			this.#break = { seq, reason: "inserted" };
		} else if (!selfConsistent) {
			this.#break = { seq, reason: "modified" };
		} else if (!linked) {
			// It points past the previous record at an earlier one: that previous record was slipped in.
			// Otherwise the record it points at is gone.
			const earlier = this.#recent.slice(0, -1).some((h) => h.hash === r.prev_hash);
			if (earlier) {
				this.#recent.pop();
				this.#records--;
				this.#break = { seq: seq - 1, reason: "inserted" };
			} else {
				this.#break = { seq, reason: "deleted" };
			}
		}
		if (this.#break) return false;
		this.#records++;
		this.#expectedSeq = expected + 1;
		this.#recent.push({ seq: expected, hash: r.hash as string });
		if (this.#recent.length > RECENT_HASHES) this.#recent.shift();
		return true;
	}

	report(): ChainReport {
		const last = this.#recent.at(-1);
		const head = last ? { seq: last.seq, hash: last.hash } : null;
		if (!this.#break) return { ok: true, records: this.#records, head };
		return { ok: false, records: this.#records, firstBrokenSeq: this.#break.seq, reason: this.#break.reason, head };
	}
}
