/**
 * Benchmarks only (bench/llm.mjs): the bare pass-through route, the floor any Worker pays for one
 * subrequest, against which the LLM plane is measured.
 */

/**
 * With `BENCH_PASSTHROUGH_URL` set, outside production, POST `/__bench/passthrough` goes to that URL
 * with no checks at all: the URL when `request` is that route, else undefined. No wrangler.toml
 * environment sets it.
 */
export function benchUpstream(request: Request, env: Env): string | undefined {
	const upstream = (env as { BENCH_PASSTHROUGH_URL?: string }).BENCH_PASSTHROUGH_URL;
	if (!upstream || env.ENVIRONMENT === "production" || !request.url.endsWith("/__bench/passthrough")) return undefined;
	return upstream;
}

/** Forwards the body to `upstream` (with `x-upstream-authorization` as its authorization) and returns the answer. */
export async function benchPassthrough(request: Request, upstream: string): Promise<Response> {
	const answer = await fetch(upstream, {
		method: "POST",
		headers: {
			"content-type": "application/json",
			authorization: request.headers.get("x-upstream-authorization") ?? "",
		},
		body: request.body,
	});
	return new Response(answer.body, {
		status: answer.status,
		headers: { "content-type": answer.headers.get("content-type") ?? "application/json" },
	});
}
