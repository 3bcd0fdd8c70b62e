/** Server-sent events: reading an upstream's event stream and writing OpenAI's. */

export interface SseEvent {
	/** The `event:` field, when the stream names its events (Anthropic does; OpenAI does not). */
	event?: string;
	data: string;
}

/** Longest event accepted from an upstream; a longer one is a broken stream, not a reason to run out of memory. */
const MAX_EVENT_BYTES = 1024 * 1024;

/**
 * Parses an SSE byte stream into events (WHATWG rules: lines end in LF, CR or CRLF; `data:` lines of
 * one event are joined with LF; comments and unknown fields are skipped). Cancels the body when the
 * consumer stops early.
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
	const reader = body.pipeThrough(new TextDecoderStream()).getReader();
	let buffer = "";
	let event: string | undefined;
	let data: string[] = [];
	let done = false;
	try {
		while (true) {
			const read = await reader.read();
			if (read.done) {
				done = true;
				buffer += "\n";
			} else {
				buffer += read.value;
				if (buffer.length > MAX_EVENT_BYTES) throw new Error("server-sent event too large");
			}
			let start = 0;
			while (true) {
				const lf = buffer.indexOf("\n", start);
				const cr = buffer.indexOf("\r", start);
				const end = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
				if (end === -1) break;
				// A CR at the very end of the buffer may be the first half of a CRLF: wait for more.
				if (end === cr && end === buffer.length - 1 && !done) break;
				const line = buffer.slice(start, end);
				start = end + (buffer[end] === "\r" && buffer[end + 1] === "\n" ? 2 : 1);
				if (line === "") {
					if (data.length > 0) yield event === undefined ? { data: data.join("\n") } : { event, data: data.join("\n") };
					event = undefined;
					data = [];
					continue;
				}
				if (line.startsWith(":")) continue;
				const colon = line.indexOf(":");
				const field = colon === -1 ? line : line.slice(0, colon);
				let value = colon === -1 ? "" : line.slice(colon + 1);
				if (value.startsWith(" ")) value = value.slice(1);
				if (field === "data") data.push(value);
				else if (field === "event") event = value;
			}
			buffer = buffer.slice(start);
			if (done) return;
		}
	} finally {
		if (!done) await reader.cancel().catch(() => {});
		reader.releaseLock();
	}
}

const encoder = new TextEncoder();

/** One `data:` event, encoded. */
export function sseData(value: unknown): Uint8Array {
	return encoder.encode(`data: ${typeof value === "string" ? value : JSON.stringify(value)}\n\n`);
}

/** OpenAI's end-of-stream marker. */
export const SSE_DONE = encoder.encode("data: [DONE]\n\n");

/** The response headers of an event stream. */
export const SSE_HEADERS = { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" };

/** An event stream of a known list of values, ending in `[DONE]` (a cached answer replayed). */
export function sseStream(values: readonly unknown[]): ReadableStream<Uint8Array> {
	return new ReadableStream({
		start(controller) {
			for (const value of values) controller.enqueue(sseData(value));
			controller.enqueue(SSE_DONE);
			controller.close();
		},
	});
}
