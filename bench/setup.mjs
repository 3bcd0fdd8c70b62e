// @ts-check
/**
 * Setup the benchmarks share beyond bench/lib.mjs: the stub LLM upstream in a process of its own, chat bodies of
 * a fixed size with unique prompts, and signed GitHub push deliveries. Used by bench/profile.mjs, bench/llm.mjs and
 * bench/webhooks.mjs.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { githubSignature, ROOT } from "../test/helpers/node/gateway.ts";

const STUB_START_TIMEOUT_MS = 30_000;
const STUB_STOP_TIMEOUT_MS = 5_000;

// ---------------------------------------------------------------- the stub, in its own process

/** @typedef {import("../test/helpers/node/llm-stub.ts").LlmStub} LlmStub */

/**
 * Starts scripts/llm-stub-server.mjs (the stub of test/helpers/node/llm-stub.ts, `record: false`) and reads its
 * URLs. `stub` carries them as the LlmStub that llmConfigFor takes; it cannot be scripted from this process.
 * `stop()` ends the child (SIGTERM, then SIGKILL after 5 s); the child also exits when this process does.
 */
export async function startStubProcess() {
	const child = spawn(process.execPath, [join(ROOT, "scripts", "llm-stub-server.mjs")], {
		cwd: ROOT,
		stdio: ["pipe", "pipe", "inherit"],
	});
	// If this process dies without stopping it, the child sees its stdin end and exits.
	const killOnExit = () => child.kill("SIGKILL");
	process.once("exit", killOnExit);
	const exited = new Promise((resolve) => child.once("exit", resolve));
	const stop = async () => {
		process.off("exit", killOnExit);
		if (child.exitCode !== null || child.signalCode !== null) return;
		child.kill("SIGTERM");
		const timer = setTimeout(() => child.kill("SIGKILL"), STUB_STOP_TIMEOUT_MS);
		await exited;
		clearTimeout(timer);
	};
	try {
		const line = await new Promise((resolve, reject) => {
			let out = "";
			const timer = setTimeout(
				() => reject(new Error("the stub process did not start in time")),
				STUB_START_TIMEOUT_MS,
			);
			child.stdout.on("data", (/** @type {Buffer} */ chunk) => {
				out += chunk.toString();
				const nl = out.indexOf("\n");
				if (nl >= 0) {
					clearTimeout(timer);
					resolve(out.slice(0, nl));
				}
			});
			child.once("exit", (code, signal) => {
				clearTimeout(timer);
				reject(new Error(`the stub process exited (${signal ?? code}) before it listened`));
			});
		});
		/** @type {{ pid: number; url: string; openaiBaseUrl: string; keylessOpenaiBaseUrl: string; anthropicBaseUrl: string }} */
		const urls = JSON.parse(line);
		const unscriptable = () => {
			throw new Error("the benchmark's stub runs in another process and cannot be scripted");
		};
		/** @type {LlmStub} */
		const stub = {
			url: urls.url,
			openaiBaseUrl: urls.openaiBaseUrl,
			keylessOpenaiBaseUrl: urls.keylessOpenaiBaseUrl,
			anthropicBaseUrl: urls.anthropicBaseUrl,
			requests: [],
			reset() {},
			script: unscriptable,
			release: unscriptable,
			close: stop,
		};
		return { stub, pid: urls.pid, stop };
	} catch (err) {
		await stop();
		throw err;
	}
}

// ---------------------------------------------------------------- chat bodies

/** Ordinary text that none of the configured guardrails (llmConfigFor) blocks or redacts. */
const PROMPT =
	"Summarise the following notes for a weekly status update. The team finished the migration of the billing " +
	"service, fixed two regressions in the search ranking, and started the design review for the new onboarding " +
	"flow. Next week they plan to load-test the gateway, write the runbook for the on-call rotation, and meet the " +
	"platform group about quotas. Keep it short, in plain words, and list open questions at the end. ";

/**
 * A maker of chat requests of exactly `bytes` bytes (compact JSON, ASCII), whatever the model's name, whose user
 * message is unique (a run id and a counter): no two requests share a cache key.
 * @param {number} bytes
 */
export function chatBodies(bytes) {
	const run = `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
	let sequence = 0;
	return (/** @type {string} */ model, stream = false) => {
		const n = sequence++;
		const shape = (/** @type {string} */ content) =>
			JSON.stringify({
				model,
				messages: [
					{ role: "system", content: "You are a concise assistant." },
					{ role: "user", content },
				],
				...(stream ? { stream: true } : {}),
			});
		const room = bytes - shape("").length;
		const head = `Request ${run}-${n}. `;
		if (room < head.length + 40) throw new Error(`a ${bytes}-byte body is too small for model ${model}`);
		const body = shape(`${head}${PROMPT.repeat(Math.ceil(room / PROMPT.length))}`.slice(0, room));
		if (body.length !== bytes) throw new Error(`request body is ${body.length} bytes, not ${bytes}`);
		return body;
	};
}

// ---------------------------------------------------------------- GitHub deliveries

const hex = (/** @type {number} */ bytes) =>
	randomUUID()
		.replace(/-/g, "")
		.repeat(2)
		.slice(0, bytes * 2);

/**
 * A GitHub `push` payload of about `bytes` bytes (compact JSON, as GitHub sends it): the usual
 * repository, pusher, sender and head-commit fields, padded with commits to the size.
 * @param {number} i @param {number} bytes
 */
export function pushPayload(i, bytes) {
	const owner = { name: "acme", email: "ops@acme.example", login: "acme", id: 1000 + (i % 97), type: "Organization" };
	const commit = (/** @type {number} */ n) => ({
		id: hex(20),
		tree_id: hex(20),
		distinct: true,
		message: `Fix edge case ${i}.${n} in the ingest path`,
		timestamp: new Date(Date.UTC(2026, 10, 1, 12, 0, n % 60)).toISOString(),
		url: `https://github.com/acme/widgets/commit/${hex(20)}`,
		author: { name: "Dev Eloper", email: "dev@acme.example", username: "dev" },
		committer: { name: "GitHub", email: "noreply@github.com", username: "web-flow" },
		added: [],
		removed: [],
		modified: [`src/module-${n}.ts`],
	});
	const head = commit(0);
	const payload = {
		ref: "refs/heads/main",
		before: hex(20),
		after: head.id,
		repository: {
			id: 123456789,
			node_id: "R_kgDOHxyzAb",
			name: "widgets",
			full_name: "acme/widgets",
			private: true,
			owner,
			html_url: "https://github.com/acme/widgets",
			default_branch: "main",
			pushed_at: 1795312858 + i,
		},
		pusher: { name: "dev", email: "dev@acme.example" },
		sender: { login: "dev", id: 4242, type: "User", site_admin: false },
		created: false,
		deleted: false,
		forced: false,
		compare: `https://github.com/acme/widgets/compare/${hex(6)}...${hex(6)}`,
		commits: [head],
		head_commit: head,
		padding: "",
	};
	let n = 1;
	while (JSON.stringify(payload).length + 700 < bytes) payload.commits.push(commit(n++));
	const { padding: _, ...rest } = payload;
	let text = JSON.stringify(rest);
	// Top up to the exact size with a realistic-looking field.
	if (text.length < bytes) {
		const room = bytes - text.length - `,"description":""`.length;
		text = `${text.slice(0, -1)},"description":"${"Widget service".padEnd(Math.max(0, room), ".")}"}`;
	}
	return text;
}

/** GitHub's delivery headers that are constant per hook. */
export const GITHUB_HEADERS = {
	"content-type": "application/json",
	"user-agent": "GitHub-Hookshot/5f1c3a2",
	"x-github-event": "push",
	"x-github-hook-id": "512345678",
	"x-github-hook-installation-target-id": "123456789",
	"x-github-hook-installation-target-type": "repository",
};

/**
 * `size` push payloads of about `bytes` bytes, each signed as GitHub does (`sha256=` + hex HMAC-SHA256 of the raw
 * body). The signature covers the body only, so a payload is valid with any delivery id.
 * @param {string} secret @param {number} size @param {number} bytes
 */
export function signedPushPool(secret, size, bytes) {
	return Array.from({ length: size }, (_, i) => {
		const body = Buffer.from(pushPayload(i, bytes));
		return { body, signature: githubSignature(secret, body) };
	});
}
