/**
 * The JSON nesting bound through the Worker: bodies nested beyond MAX_JSON_DEPTH are refused with a
 * 400 where they are read (OpenAI's error shape on the OpenAI routes, a problem elsewhere), before any
 * walker over them runs; a body at the bound passes the guard.
 */
import { describe, expect, it } from "vitest";
import { MAX_JSON_DEPTH } from "../../src/lib";
import { call, expectProblem } from "../helpers/gateway";
import { seedCaller } from "../helpers/identity";

/** `{"a":{"a":…1…}}`, `depth` objects deep, as text (building the value would need recursion to send). */
const deep = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;

const json = { "content-type": "application/json" };

async function llmToken(): Promise<string> {
	return (await seedCaller(["llm"], { tier: "pro" })).token;
}

/** A chat request with `field` spliced in as raw JSON text. */
function chat(field: string): string {
	return `{"model":"fast","messages":[{"role":"user","content":"hi"}],${field}}`;
}

/**
 * The request got past the body guards and as far as routing, where the tests configure no reachable
 * provider (Workers AI is remote-only, the default config's keys are unset): 503 `upstream_unavailable`.
 */
async function expectPastTheGuard(res: Response): Promise<void> {
	const body = (await res.json()) as { error?: { code?: string } };
	expect({ status: res.status, code: body.error?.code }).toEqual({ status: 503, code: "upstream_unavailable" });
}

describe("JSON nesting bound", () => {
	it.each([
		["metadata", (d: string) => `"metadata":${d}`],
		[
			"tools[].function.parameters",
			(d: string) => `"tools":[{"type":"function","function":{"name":"f","parameters":${d}}}]`,
		],
		[
			"response_format.json_schema.schema",
			(d: string) => `"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":${d}}}`,
		],
	])("answers a chat completion whose %s nests 6,000 deep with an OpenAI-shaped 400", async (_, field) => {
		const token = await llmToken();
		const res = await call("/v1/chat/completions", {
			method: "POST",
			token,
			headers: json,
			body: chat(field(deep(6000))),
		});
		expect(res.status).toBe(400);
		expect(res.headers.get("content-type")).toBe("application/json");
		expect(await res.json()).toEqual({
			error: {
				message: `The JSON body nests deeper than ${MAX_JSON_DEPTH} levels.`,
				type: "invalid_request_error",
				param: null,
				code: "bad_request",
			},
		});
	});

	it("lets a chat body nested exactly MAX_JSON_DEPTH deep past the guard", async () => {
		const token = await llmToken();
		// The body object and the metadata's own nesting: 1 + (MAX_JSON_DEPTH - 1) levels.
		const res = await call("/v1/chat/completions", {
			method: "POST",
			token,
			headers: json,
			body: chat(`"metadata":${deep(MAX_JSON_DEPTH - 1)}`),
		});
		await expectPastTheGuard(res);
	});

	it("answers a deep body on a problem+json route with a 400 problem", async () => {
		const { token } = await seedCaller(["webhooks:manage"], { tier: "pro" });
		const body = `{"source":"github","extra":${deep(6000)}}`;
		const res = await call("/v1/webhooks/endpoints", { method: "POST", token, headers: json, body });
		const problem = await expectProblem(res, 400, "bad-request");
		expect(problem.detail).toBe(`The JSON body nests deeper than ${MAX_JSON_DEPTH} levels.`);
	});

	it("does not count brackets inside strings", async () => {
		const token = await llmToken();
		const content = JSON.stringify("[{".repeat(5000));
		const res = await call("/v1/chat/completions", {
			method: "POST",
			token,
			headers: json,
			body: `{"model":"fast","messages":[{"role":"user","content":${content}}]}`,
		});
		await expectPastTheGuard(res);
	});
});
