/**
 * Answers the Worker's outbound fetches to the external services that cannot run inside the test (the
 * IdP's JWKS, LLM providers): one spy on `fetch` per test file, one answer per exact URL; every other
 * URL goes to the real `fetch`. Registering again replaces that URL's answer and never stacks spies.
 */
import { vi } from "vitest";

type Answer = (request: Request) => Response | Promise<Response>;

const realFetch = globalThis.fetch;
const answers = new Map<string, Answer>();

/** Answers every outbound fetch of exactly `url` with `answer` (until `vi.restoreAllMocks()`). */
export function answerFetch(url: string, answer: Answer): void {
	answers.set(url, answer);
	// A restoreAllMocks() elsewhere in the file removes the spy: put it back, with every answer still known.
	if (vi.isMockFunction(globalThis.fetch)) return;
	vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
		const request = new Request(input, init);
		const known = answers.get(request.url);
		return known ? known(request) : realFetch(input, init);
	});
}
