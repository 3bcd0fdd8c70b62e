// @ts-check
/**
 * The stub LLM upstream (test/helpers/node/llm-stub.ts) in a process of its own, for bench/llm.mjs and `npm run dev -- --llm-stub`: the
 * benchmark's load generator must not share an event loop with the server it measures through. Starts the
 * stub on a free port with `record: false` (memory stays flat), prints its URLs as one JSON line on stdout,
 * and closes when it gets SIGTERM or SIGINT, or when its parent goes away (stdin reaches its end).
 * Loads the stub through Node's built-in TypeScript type stripping (Node ≥ 22.18).
 */
import { startLlmStub } from "../test/helpers/node/llm-stub.ts";

const stub = await startLlmStub({ record: false });
let closing = false;
const close = () => {
	if (closing) return;
	closing = true;
	stub.close().then(
		() => process.exit(0),
		() => process.exit(1),
	);
};
process.once("SIGTERM", close);
process.once("SIGINT", close);
process.stdin.on("end", close);
process.stdin.resume();
process.stdout.write(
	`${JSON.stringify({
		pid: process.pid,
		url: stub.url,
		openaiBaseUrl: stub.openaiBaseUrl,
		keylessOpenaiBaseUrl: stub.keylessOpenaiBaseUrl,
		anthropicBaseUrl: stub.anthropicBaseUrl,
	})}\n`,
);
