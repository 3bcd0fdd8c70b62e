/** Assertions on the gateway's HTTP answers, for tests with real clients. */
import { expect } from "vitest";

export interface Problem {
	type: string;
	title: string;
	status: number;
	detail?: string;
	code: string;
	requestId?: string;
}

/** Asserts an RFC 9457 problem with this status and code, and returns it. */
export async function expectProblem(res: Response, status: number, code: string): Promise<Problem> {
	expect(res.status).toBe(status);
	expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
	const body = (await res.json()) as Problem;
	expect(body).toMatchObject({ status, code });
	expect(typeof body.title).toBe("string");
	expect(body.requestId).toMatch(/\S/);
	return body;
}

/** Bounded polling: calls `probe` every `intervalMs` until it returns true or `timeoutMs` passes. */
export async function eventually(probe: () => Promise<boolean>, timeoutMs: number, intervalMs = 200): Promise<boolean> {
	const deadline = Date.now() + timeoutMs;
	const maxAttempts = Math.ceil(timeoutMs / intervalMs) + 1;
	for (let attempt = 0; attempt < maxAttempts; attempt++) {
		if (await probe()) return true;
		if (Date.now() >= deadline) break;
		await new Promise((r) => setTimeout(r, intervalMs));
	}
	return false;
}

/** `promise`'s value, or undefined when it has not settled within `ms` (the timer is cleared either way). */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<undefined>((resolve) => {
		timer = setTimeout(() => resolve(undefined), ms);
	});
	try {
		return await Promise.race([promise, timeout]);
	} finally {
		clearTimeout(timer);
	}
}

/** A request to the gateway at `base`: JSON-encodes `body` (with its content type) when there is one. */
export function call(
	base: URL,
	path: string,
	init: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
) {
	const headers: Record<string, string> = { ...init.headers };
	if (init.body !== undefined) headers["content-type"] = "application/json";
	return fetch(new URL(path, base), {
		method: init.method ?? "GET",
		headers,
		body: init.body === undefined ? undefined : JSON.stringify(init.body),
	});
}
