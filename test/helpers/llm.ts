/** Small helpers shared by the LLM provider tests. */
import { expect } from "vitest";
import { ProviderError } from "../../src/llm/providers/interface";
import type { ChatCompletionChunk } from "../../src/llm/types";

/** A JSON response, as an upstream would send it. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
	return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

/** Every chunk of a stream, in order. */
export async function collect(stream: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
	const out: ChatCompletionChunk[] = [];
	for await (const chunk of stream) out.push(chunk);
	return out;
}

/** The ProviderError `promise` fails with (the test fails if it resolves or fails otherwise). */
export async function providerError(promise: Promise<unknown>): Promise<ProviderError> {
	const err = await promise.then(
		() => undefined,
		(e: unknown) => e,
	);
	expect(err).toBeInstanceOf(ProviderError);
	return err as ProviderError;
}
