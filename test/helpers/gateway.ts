/** Calling the Worker the way Cloudflare does: `exports.default.fetch`, inside workerd. */
import { exports } from "cloudflare:workers";
import { expect } from "vitest";

export const BASE = "https://gateway.test";

export function call(path: string, init: RequestInit & { token?: string; apiKey?: string } = {}): Promise<Response> {
	const headers = new Headers(init.headers);
	if (init.token) headers.set("authorization", `Bearer ${init.token}`);
	if (init.apiKey) headers.set("x-api-key", init.apiKey);
	return exports.default.fetch(new Request(`${BASE}${path}`, { ...init, headers }));
}

/** A JSON request of `method` with `body`. */
export const json = (method: string, body: unknown): RequestInit => ({
	method,
	headers: { "content-type": "application/json" },
	body: JSON.stringify(body),
});

export interface Problem {
	type: string;
	title: string;
	status: number;
	detail: string;
	code: string;
	requestId: string;
	errors?: Array<{ path: string; message: string }>;
}

/** Asserts an RFC 9457 problem response with this status and code, and returns its body. */
export async function expectProblem(res: Response, status: number, code: string): Promise<Problem> {
	const body = (await res.json()) as Problem;
	expect({ status: res.status, code: body.code }).toEqual({ status, code });
	expect(res.headers.get("content-type")).toBe("application/problem+json");
	expect(body.status).toBe(status);
	expect(body.requestId).toBe(res.headers.get("x-request-id"));
	return body;
}
