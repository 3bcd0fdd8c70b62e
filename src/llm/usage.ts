/**
 * Tokens and the usage records of the LLM plane. Token estimates stand in where a provider reports no
 * usage (and for reserving against budgets before a call); a usage record describes one LLM request.
 * Records are buffered per isolate and published many to an `llm.usage` event, one tenant's per event:
 * the events consumer's per-event work (a queue message, `processed_events` bookkeeping, a D1 round
 * trip) would otherwise cost more than the request's own. The recorder writes each record into
 * `llm_usage` exactly once, keyed by the record's id, however often the queue delivers its event.
 */
import { getTableColumns, sql } from "drizzle-orm";
import { z } from "zod";
import { database, llmUsage } from "../db";
import { type EventEnvelope, EventEnvelopeSchema, type EventHandler, newEvent, publish } from "../events";
import { log, type WaitUntil } from "../http";
import { errorText } from "../lib";
import type { ChatCompletion, ChatMessage, ChatRequest, EmbeddingsRequest } from "./types";

/** Tokens a message costs beyond its text (role, separators), as in OpenAI's counting guide. */
export const MESSAGE_OVERHEAD_TOKENS = 4;
/** Tokens that prime the assistant's reply, once per request. */
export const REPLY_PRIMING_TOKENS = 3;
/** An image part: OpenAI's price of a low-detail image, and of a 1024×1024 one otherwise (erring high). */
const IMAGE_TOKENS_LOW = 85;
const IMAGE_TOKENS = 765;

/** UTF-8 length of `text`, without encoding it. */
function utf8Length(text: string): number {
	let bytes = 0;
	for (let i = 0; i < text.length; i++) {
		const code = text.charCodeAt(i);
		if (code < 0x80) bytes += 1;
		else if (code < 0x800) bytes += 2;
		else if (code >= 0xd800 && code <= 0xdbff) {
			// A surrogate pair: one code point of four bytes.
			bytes += 4;
			i++;
		} else bytes += 3;
	}
	return bytes;
}

/**
 * Estimated tokens of `text`: ⌈UTF-8 bytes / 4⌉. For English and code that is the usual ⌈chars / 4⌉;
 * scripts that tokenise into more tokens per character (CJK, Cyrillic…) count their wider encoding,
 * which keeps the estimate on the high side. It is an estimate, and usage records built on it say so.
 */
export function estimateTokens(text: string): number {
	return Math.ceil(utf8Length(text) / 4);
}

function contentTokens(content: ChatMessage["content"]): number {
	if (content == null) return 0;
	if (typeof content === "string") return estimateTokens(content);
	let tokens = 0;
	for (const part of content) {
		if (part.type === "text") tokens += estimateTokens(part.text);
		else tokens += part.image_url.detail === "low" ? IMAGE_TOKENS_LOW : IMAGE_TOKENS;
	}
	return tokens;
}

/** Estimated prompt tokens of a chat request: messages with their overhead, tool definitions and the response schema. */
export function estimatePromptTokens(request: ChatRequest): number {
	let tokens = REPLY_PRIMING_TOKENS;
	for (const message of request.messages) {
		tokens += MESSAGE_OVERHEAD_TOKENS + contentTokens(message.content);
		if ("name" in message && message.name) tokens += estimateTokens(message.name);
		if (message.role === "assistant") {
			for (const call of message.tool_calls ?? []) {
				tokens += estimateTokens(call.function.name) + estimateTokens(call.function.arguments);
			}
		}
	}
	if (request.tools?.length) tokens += estimateTokens(JSON.stringify(request.tools));
	if (request.response_format?.type === "json_schema") {
		tokens += estimateTokens(JSON.stringify(request.response_format.json_schema));
	}
	return tokens;
}

/** Estimated tokens of an embeddings input; token-id inputs count exactly. */
export function estimateEmbeddingsTokens(request: EmbeddingsRequest): number {
	const { input } = request;
	if (typeof input === "string") return estimateTokens(input);
	let tokens = 0;
	for (const item of input) {
		if (typeof item === "string") tokens += estimateTokens(item);
		else if (typeof item === "number") tokens += 1;
		else tokens += item.length;
	}
	return tokens;
}

/** Estimated completion tokens of an answer: its text and its tool calls. */
export function estimateCompletionTokens(completion: ChatCompletion): number {
	let tokens = 0;
	for (const { message } of completion.choices) {
		if (message.content) tokens += estimateTokens(message.content);
		for (const call of message.tool_calls ?? []) {
			tokens += estimateTokens(call.function.name) + estimateTokens(call.function.arguments);
		}
	}
	return tokens;
}

export const LLM_USAGE_EVENT = "llm.usage";
/** Most records one `llm.usage` event may carry. */
export const MAX_EVENT_RECORDS = 100;
/**
 * Records the buffer puts in one event, and the UTF-8 bytes their JSON may take: a message stays well
 * under the queue's 128 KB (a record is at most a few KB, so a full event is far from the limit).
 */
export const EVENT_RECORDS = 50;
export const EVENT_RECORD_BYTES = 100_000;

const count = z.number().int().min(0);

/** One LLM request, answered or not. Its tenant is the tenant of the event that carries it. */
export const UsageRecordSchema = z.object({
	/** Unique per request (`use_<32 hex>`) and the `llm_usage` row's id, so a record is written once. */
	id: z.string().min(1).max(128),
	/** When the request ended: the row's day and creation time. */
	time: z.iso.datetime(),
	/** `key:<id>` or `jwt:<sub>`. */
	actor: z.string().min(1).max(256),
	keyId: z.string().min(1).max(128).optional(),
	requestId: z.string().min(1).max(128).optional(),
	operation: z.enum(["chat", "embeddings"]),
	/** What the caller asked for: an alias or `provider/model`. */
	requested: z.string().min(1).max(256),
	/** Who served it; null when nothing did. */
	provider: z.string().min(1).max(128).nullable(),
	model: z.string().min(1).max(256).nullable(),
	promptTokens: count,
	completionTokens: count,
	/** True when the provider reported no usage and the counts are the gateway's estimate. */
	estimated: z.boolean(),
	costMicroUsd: count,
	latencyMs: count,
	/** HTTP status answered to the client. */
	status: z.number().int().min(100).max(599),
	cacheHit: z.boolean(),
	byok: z.boolean(),
	/** Upstream attempts made (0 for a cache hit or a request refused before any). */
	attempts: count,
});
export type UsageRecord = z.infer<typeof UsageRecordSchema>;

/** The `data` of an `llm.usage` event: requests of the envelope's tenant. */
export const UsageEventDataSchema = z.object({
	records: z.array(UsageRecordSchema).min(1).max(MAX_EVENT_RECORDS),
});

/** Every column, none left to a default: the recorder's statement writes each one as given. */
function usageRow(tenantId: string, r: UsageRecord): Required<typeof llmUsage.$inferInsert> {
	const at = Date.parse(r.time);
	return {
		id: r.id,
		tenantId,
		actor: r.actor,
		keyId: r.keyId ?? null,
		requestId: r.requestId ?? null,
		operation: r.operation,
		requested: r.requested,
		provider: r.provider,
		model: r.model,
		promptTokens: r.promptTokens,
		completionTokens: r.completionTokens,
		estimated: r.estimated ? 1 : 0,
		costMicroUsd: r.costMicroUsd,
		latencyMs: r.latencyMs,
		status: r.status,
		cacheHit: r.cacheHit ? 1 : 0,
		byok: r.byok ? 1 : 0,
		attempts: r.attempts,
		day: new Date(at).toISOString().slice(0, 10),
		createdAt: at,
	};
}

/** The llm_usage columns, in the order a row is sent to {@link usageRecorder}'s statement. */
const USAGE_COLUMNS = Object.entries(getTableColumns(llmUsage)) as [
	keyof typeof llmUsage.$inferInsert,
	{ name: string },
][];
/** The statement's column list, and each row's values unpacked from its JSON array, in that order. */
const USAGE_COLUMN_NAMES = sql.join(
	USAGE_COLUMNS.map(([, column]) => sql.identifier(column.name)),
	sql`, `,
);
const USAGE_VALUES = sql.join(
	USAGE_COLUMNS.map((_, i) => sql.raw(`value ->> ${i}`)),
	sql`, `,
);

/**
 * Writes the records of each `llm.usage` event as `llm_usage` rows keyed by record id, in ONE statement
 * (the rows travel as one JSON array bound to one parameter, unpacked by `json_each`): a redelivered or
 * replayed event, or a record sent twice, inserts nothing the second time. Measured under Miniflare, one
 * statement for 20 rows costs about half the CPU of a batch of 20 single-row statements (bench/RESULTS.md).
 * Data that does not match the schema throws, so the event ends in the dead-letter queue rather than as
 * wrong rows.
 */
export const usageRecorder: EventHandler = {
	name: "llm-usage-recorder",
	idempotent: true,
	handles: (event) => event.type === LLM_USAGE_EVENT,
	async handle(event, env) {
		const { records } = UsageEventDataSchema.parse(event.data);
		const rows = records.map((r) => {
			const row = usageRow(event.tenantId, r);
			return USAGE_COLUMNS.map(([key]) => row[key]);
		});
		// `WHERE true` keeps SQLite from reading ON CONFLICT as part of the SELECT (its documented upsert rule).
		await database(env.DB).run(
			sql`INSERT INTO ${llmUsage} (${USAGE_COLUMN_NAMES}) SELECT ${USAGE_VALUES} FROM json_each(${JSON.stringify(rows)})
				WHERE true ON CONFLICT (${sql.identifier(llmUsage.id.name)}) DO NOTHING`,
		);
	},
};

export type UsagePublisher = (env: Pick<Env, "EVENTS">, events: EventEnvelope[]) => Promise<void>;

/** A validated record waiting in the buffer, with what its event's envelope needs. */
export interface PendingUsage {
	tenantId: string;
	traceparent?: string | undefined;
	record: UsageRecord;
}

/** What {@link recordUsage} is handed: everything but the id and time, which it makes itself. */
const UsageInputSchema = z.object({
	tenantId: EventEnvelopeSchema.shape.tenantId,
	traceparent: EventEnvelopeSchema.shape.traceparent,
	record: UsageRecordSchema.omit({ id: true, time: true }),
});

/**
 * The `llm.usage` events of buffered records: one per tenant (in order of first appearance), split
 * further at {@link EVENT_RECORDS} records or {@link EVENT_RECORD_BYTES} bytes of records. An event
 * carries its first record's traceparent.
 */
function usageEvents(pending: PendingUsage[]): EventEnvelope[] {
	const events: EventEnvelope[] = [];
	const emit = (tenantId: string, chunk: PendingUsage[]) =>
		events.push(
			newEvent({
				type: LLM_USAGE_EVENT,
				tenantId,
				source: "llm",
				traceparent: chunk[0]?.traceparent,
				data: { records: chunk.map((p) => p.record) },
			}),
		);
	for (const [tenantId, group] of Map.groupBy(pending, (p) => p.tenantId)) {
		let chunk: PendingUsage[] = [];
		let bytes = 0;
		for (const p of group) {
			// The record's JSON and the comma that separates it from the next.
			const size = utf8Length(JSON.stringify(p.record)) + 1;
			if (chunk.length === EVENT_RECORDS || (chunk.length > 0 && bytes + size > EVENT_RECORD_BYTES)) {
				emit(tenantId, chunk);
				chunk = [];
				bytes = 0;
			}
			chunk.push(p);
			bytes += size;
		}
		emit(tenantId, chunk);
	}
	return events;
}

export interface UsageBufferOptions {
	/** A batch is sent as soon as it holds this many records. */
	maxRecords?: number;
	/** …or this long after its first record was buffered. */
	maxDelayMs?: number;
	/** How a batch's events are sent: {@link publish} unless a test says otherwise. */
	publisher?: UsagePublisher;
}

interface Batch {
	env: Pick<Env, "EVENTS">;
	pending: PendingUsage[];
	timer: ReturnType<typeof setTimeout>;
	/** Resolves the promise handed to the `waitUntil` of the request that opened the batch. */
	settle: () => void;
}

/**
 * Usage records of one isolate, sent in batches: when `maxRecords` are buffered, or `maxDelayMs` after
 * the first, whichever comes first. A batch becomes one `llm.usage` event per tenant (more if large),
 * all published together. The request that opens a batch registers the batch's completion with its
 * `waitUntil`, so the runtime keeps the isolate alive until the batch is on the queue; a request that
 * fills a batch registers the send it starts. A failed send is logged and retried once, then given up.
 * Usage is therefore lost only if the isolate dies hard inside that window (≤ `maxDelayMs` plus two
 * sends) or the queue refuses twice in a row. A retry after a partly accepted send, a redelivery or a
 * replay may bring a record twice: the recorder, keying rows by record id, writes it once.
 */
export class UsageBuffer {
	readonly #maxRecords: number;
	readonly #maxDelayMs: number;
	readonly #publisher: UsagePublisher;
	#batch: Batch | undefined;
	readonly #sending = new Set<Promise<void>>();

	constructor(options: UsageBufferOptions = {}) {
		this.#maxRecords = options.maxRecords ?? EVENT_RECORDS;
		this.#maxDelayMs = options.maxDelayMs ?? 100;
		this.#publisher = options.publisher ?? publish;
		if (!Number.isInteger(this.#maxRecords) || this.#maxRecords < 1) {
			throw new RangeError("maxRecords must be a positive integer");
		}
		if (!(this.#maxDelayMs >= 0)) throw new RangeError("maxDelayMs must be ≥ 0");
	}

	/** Buffers a validated record; the send happens later, kept alive by `waitUntil`. */
	add(env: Pick<Env, "EVENTS">, waitUntil: WaitUntil, usage: PendingUsage): void {
		// One batch goes to one queue binding: a different one closes the current batch first.
		if (this.#batch && this.#batch.env.EVENTS !== env.EVENTS) waitUntil(this.#dispatch());
		let batch = this.#batch;
		if (!batch) {
			let settle!: () => void;
			const sent = new Promise<void>((resolve) => {
				settle = resolve;
			});
			const opened: Batch = {
				env,
				pending: [],
				settle,
				timer: setTimeout(() => {
					if (this.#batch === opened) void this.#dispatch();
				}, this.#maxDelayMs),
			};
			batch = opened;
			this.#batch = opened;
			waitUntil(sent);
		}
		batch.pending.push(usage);
		if (batch.pending.length >= this.#maxRecords) waitUntil(this.#dispatch());
	}

	/** Sends what is buffered now and waits for every send under way (tests, and shutdown paths). */
	async flush(): Promise<void> {
		void this.#dispatch();
		await Promise.all([...this.#sending]);
	}

	/** Closes the current batch and sends it; resolves when it is sent or given up (never rejects). */
	#dispatch(): Promise<void> {
		const batch = this.#batch;
		if (!batch) return Promise.resolve();
		this.#batch = undefined;
		clearTimeout(batch.timer);
		const sending = this.#send(batch.env, usageEvents(batch.pending)).finally(() => {
			this.#sending.delete(sending);
			batch.settle();
		});
		this.#sending.add(sending);
		return sending;
	}

	async #send(env: Pick<Env, "EVENTS">, events: EventEnvelope[]): Promise<void> {
		try {
			await this.#publisher(env, events);
			return;
		} catch (err) {
			log("warn", "usage events not published; retrying once", { events: events.length, error: errorText(err) });
		}
		try {
			await this.#publisher(env, events);
		} catch (err) {
			log("error", "usage events lost", {
				events: events.length,
				firstEventId: events[0]?.id,
				error: errorText(err),
			});
		}
	}
}

/** The isolate's usage buffer. */
export const usageBuffer = new UsageBuffer();

/**
 * Validates one request's usage, gives it an id and the current time, and hands it to the isolate's
 * buffer; returns the record as buffered. Throws (before buffering) when the usage is invalid, so one
 * bad record can never make a whole batch fail to publish or be recorded.
 */
export function recordUsage(
	env: Pick<Env, "EVENTS">,
	waitUntil: WaitUntil,
	usage: { tenantId: string; traceparent?: string; record: Omit<UsageRecord, "id" | "time"> },
): UsageRecord {
	// The id and time are made here, valid by construction: only what the caller built is checked.
	const valid = UsageInputSchema.parse(usage);
	const pending: PendingUsage = {
		tenantId: valid.tenantId,
		traceparent: valid.traceparent,
		record: {
			id: `use_${crypto.randomUUID().replace(/-/g, "")}`,
			time: new Date().toISOString(),
			...valid.record,
		},
	};
	usageBuffer.add(env, waitUntil, pending);
	return pending.record;
}

/** Sends the isolate's buffered usage now and waits for it (tests). */
export function flushUsage(): Promise<void> {
	return usageBuffer.flush();
}
