/** The upstream side of a streamed chat answer: starting it (until its first chunk) and reading the rest. */
import { orTimeout, untilAborted } from "../../lib";
import type { Target } from "../config";
import { type Plane, providerCall } from "../plane";
import { ProviderError } from "../providers";
import { route, type Served } from "../router";
import type { Bill } from "../settlement";
import type { ChatCompletionChunk, ChatRequest } from "../types";

/** A started upstream stream: its first chunk in hand, the rest still to read. */
export type Upstream = Served<{ first: IteratorResult<ChatCompletionChunk>; rest: AsyncIterator<ChatCompletionChunk> }>;

/**
 * Routes a streaming request until one target's first chunk is in hand: the first chunk decides, so
 * every failure before it may still fall back. A request no target could start is settled and thrown.
 */
export async function startStream(
	plane: Plane,
	bill: Bill,
	targets: readonly Target[],
	request: ChatRequest,
): Promise<Upstream> {
	try {
		return await route(plane.routeEnv, targets, async (a) => {
			const chunks = await a.provider.chatStream(providerCall(plane, a, request, "stream"));
			const rest = chunks[Symbol.asyncIterator]();
			// Raced against the attempt's signal, since a provider's iterator need not watch it.
			const noFirstChunk = () => new ProviderError("timeout", "no first chunk in time");
			return { first: await untilAborted(rest.next(), a.signal, noFirstChunk), rest };
		});
	} catch (err) {
		bill.failed(err);
		throw err;
	}
}

/** Reads a started upstream's chunks in order: the first (in hand), then the rest, each within the idle timeout. */
export class ChunkReader {
	readonly #upstream: Upstream;
	readonly #idleMs: number;
	#first: IteratorResult<ChatCompletionChunk> | null;

	constructor(upstream: Upstream, idleMs: number) {
		this.#upstream = upstream;
		this.#idleMs = idleMs;
		this.#first = upstream.value.first;
	}

	/** The next upstream chunk, or a stream ProviderError after `idleMs` of silence. */
	next(): Promise<IteratorResult<ChatCompletionChunk>> {
		const first = this.#first;
		if (first) {
			this.#first = null;
			return Promise.resolve(first);
		}
		const ms = this.#idleMs;
		return orTimeout(this.#upstream.value.rest.next(), ms, () => new ProviderError("stream", `no chunk for ${ms} ms`));
	}

	/** Stops reading: aborts the upstream call and closes its iterator. */
	stop(): void {
		this.#upstream.abort();
		void this.#upstream.value.rest.return?.().catch(() => {});
	}
}
