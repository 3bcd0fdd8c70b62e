/**
 * The local developer flow, end to end: `npm run dev` sets up and serves the gateway and prints
 * tokens that work; `npm run token` mints tokens the gateway's secret verifies. Runs in place (the
 * dev script is idempotent), on a free port, and leaves no process behind. For the run it adds a
 * marked block to .dev.vars — a provider key and an LLM_CONFIG pointing at a stub upstream, as a
 * newcomer with a real key would — and removes it afterwards.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SCOPES } from "../../src/config/scopes";
import { TIER_NAMES, TIERS } from "../../src/config/tiers";
import { eventually, within } from "../helpers/node/http.ts";
import { type LlmStub, startLlmStub } from "../helpers/node/llm-stub.ts";
import { uniqueWord } from "../helpers/random";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const NODE = existsSync(join(ROOT, "node_modules", ".bin", "node"))
	? join(ROOT, "node_modules", ".bin", "node")
	: process.execPath;
const READY_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 20_000;
/** The banner's last token line, ended: once it is out, the banner is (a chunk may end inside the token). */
const BANNER_PRINTED = /EDGEWAY_OPERATOR_TOKEN=\S+\r?\n/;
/** How long an isolate spends one admission lease of the demo tenant's tier (pro), from src/config/tiers.ts. */
const LEASE_TTL_MS = TIERS.pro.lease.ttlMs;

function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = createServer();
		server.once("error", reject);
		server.listen({ host: "127.0.0.1", port: 0 }, () => {
			const address = server.address();
			const port = typeof address === "object" && address ? address.port : 0;
			server.close(() => resolve(port));
		});
	});
}

/** True while any process of the group led by `pgid` is alive. */
function groupAlive(pgid: number): boolean {
	try {
		process.kill(-pgid, 0);
		return true;
	} catch (err) {
		return (err as NodeJS.ErrnoException).code === "EPERM";
	}
}

function waitForGroupExit(pgid: number, timeoutMs: number): Promise<boolean> {
	return eventually(async () => !groupAlive(pgid), timeoutMs, 50);
}

/** Waits until the clock reads at least `time` (ms since the epoch). */
async function until(time: number): Promise<void> {
	const left = time - Date.now();
	if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
}

/** The top-level [vars] of wrangler.toml (string values only), read independently of the scripts. */
function wranglerVars(): Record<string, string> {
	const text = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
	const section = /^\[vars\]\s*$([\s\S]*?)(?=^\s*\[)/m.exec(text)?.[1] ?? "";
	const vars: Record<string, string> = {};
	for (const m of section.matchAll(/^\s*([A-Za-z0-9_]+)\s*=\s*"([^"]*)"/gm)) vars[m[1] as string] = m[2] as string;
	return vars;
}

function devSecret(): Uint8Array {
	const text = readFileSync(join(ROOT, ".dev.vars"), "utf8");
	const secret = /^\s*JWT_HS256_SECRET\s*=\s*"?([^"\s]+)"?\s*$/m.exec(text)?.[1];
	if (!secret) throw new Error(".dev.vars has no JWT_HS256_SECRET");
	return new TextEncoder().encode(secret);
}

const DEV_VARS = join(ROOT, ".dev.vars");
const BLOCK_START = "# >>> added by test/e2e/dev-flow.test.ts for its run (removed when it ends)";
const BLOCK_END = "# <<< test/e2e/dev-flow.test.ts";
/** The provider key a newcomer puts in .dev.vars. */
const DEV_VARS_KEY = "sk-e2e-from-dev-vars-0123456789";

/** .dev.vars without this test's block (a block left by a killed run included). */
function devVarsWithoutBlock(): string {
	if (!existsSync(DEV_VARS)) return "";
	let text = readFileSync(DEV_VARS, "utf8");
	for (let start = text.indexOf(BLOCK_START); start >= 0; start = text.indexOf(BLOCK_START)) {
		const end = text.indexOf(BLOCK_END, start);
		text = text.slice(0, start) + (end < 0 ? "" : text.slice(end + BLOCK_END.length).replace(/^\n/, ""));
	}
	return text;
}

function addDevVarsBlock(stub: LlmStub): void {
	// A custom configuration that says nothing about guardrails, as --llm-stub's and most local ones.
	const llmConfig = {
		providers: { openai: { kind: "openai", baseUrl: stub.openaiBaseUrl, apiKeySecret: "OPENAI_API_KEY" } },
		aliases: { fast: { targets: [{ provider: "openai", model: "ok" }] } },
	};
	const kept = devVarsWithoutBlock();
	const block = [
		BLOCK_START,
		`OPENAI_API_KEY=${DEV_VARS_KEY}`,
		`LLM_CONFIG='${JSON.stringify(llmConfig)}'`,
		"E2E_UNDECLARED_NAME=not-loaded",
		BLOCK_END,
		"",
	].join("\n");
	writeFileSync(DEV_VARS, `${kept}${kept === "" || kept.endsWith("\n") ? "" : "\n"}${block}`, { mode: 0o600 });
}

/** `npm run --silent token -- …args`: its exit status (null when it could not run or was killed after 30 s) and output. */
function runToken(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
	return new Promise((resolve) => {
		const command = ["run", "--silent", "token", "--", ...args];
		execFile("npm", command, { cwd: ROOT, timeout: 30_000 }, (error, stdout, stderr) => {
			const status = error === null ? 0 : typeof error.code === "number" ? error.code : null;
			resolve({ status, stdout: stdout.trim(), stderr });
		});
	});
}

describe("npm run dev", () => {
	let child: ChildProcess | undefined;
	let output = "";
	let url = "";
	let demoToken = "";
	let demoAdminToken = "";
	let operatorToken = "";
	let stub: LlmStub | undefined;
	let exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

	beforeAll(async () => {
		const port = await freePort();
		stub = await startLlmStub();
		addDevVarsBlock(stub);
		// Its own process group, so every process it starts (wrangler, workerd, esbuild) can be reaped.
		child = spawn(NODE, [join(ROOT, "scripts", "dev.mjs")], {
			cwd: ROOT,
			env: { ...process.env, PORT: String(port) },
			stdio: ["ignore", "pipe", "pipe"],
			detached: true,
		});
		const proc = child;
		exit = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
		proc.stdout?.on("data", (d) => {
			output += d;
		});
		proc.stderr?.on("data", (d) => {
			output += d;
		});
		let exited = false;
		void exit.then(() => {
			exited = true;
		});
		// Done when the banner is out or the script has exited, whichever comes first; bounded.
		const printed = new Promise<void>((resolve) => {
			const check = () => {
				if (BANNER_PRINTED.test(output)) resolve();
			};
			proc.stdout?.on("data", check);
			proc.stderr?.on("data", check);
			void exit.then(() => resolve());
		});
		await within(printed, READY_TIMEOUT_MS);
		const ready = /Edgeway is ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
		if (!ready) throw new Error(`npm run dev did not print its banner (exited: ${exited}):\n${output.slice(-4000)}`);
		url = ready[1] as string;
		demoToken = /EDGEWAY_DEMO_TOKEN=(\S+)/.exec(output)?.[1] ?? "";
		demoAdminToken = /EDGEWAY_DEMO_ADMIN_TOKEN=(\S+)/.exec(output)?.[1] ?? "";
		operatorToken = /EDGEWAY_OPERATOR_TOKEN=(\S+)/.exec(output)?.[1] ?? "";
		expect(url).toBe(`http://127.0.0.1:${port}`);
	}, READY_TIMEOUT_MS + 10_000);

	afterAll(async () => {
		// Safety net: whatever happened above, nothing of the group survives the file.
		const pid = child?.pid;
		if (pid && groupAlive(pid)) {
			try {
				process.kill(-pid, "SIGKILL");
			} catch {
				// already gone
			}
			await waitForGroupExit(pid, 5000);
		}
		if (existsSync(DEV_VARS)) writeFileSync(DEV_VARS, devVarsWithoutBlock());
		await stub?.close();
	}, 15_000);

	it("sets up the project: .dev.vars, migrations, seeded tenants", () => {
		expect(existsSync(join(ROOT, ".dev.vars"))).toBe(true);
		expect(output).toMatch(/local D1 migrations/);
		expect(output).toMatch(new RegExp(`tenants "${wranglerVars().OPERATOR_TENANT}" and "demo"`));
		expect(output).not.toMatch(/edgeway: .*(failed|error)/i);
	});

	it("prints curl lines and the docs URL", () => {
		expect(output).toContain(`curl -sS ${url}/healthz`);
		expect(output).toContain(`-H "Authorization: Bearer $EDGEWAY_DEMO_TOKEN" ${url}/v1/me`);
		expect(output).toContain(`${url}/v1/admin/tenants/demo/keys`);
		expect(output).toContain(`${url}/docs`);
	});

	it("prints the base URL, a demo-tenant admin token that reads its audit log, and the guardrails in force", async () => {
		expect(output).toContain(`export EDGEWAY_URL=${url}`);
		const audit = await fetch(`${url}/v1/audit`, { headers: { authorization: `Bearer ${demoAdminToken}` } });
		expect(audit.status, await audit.clone().text()).toBe(200);
		expect(await audit.json()).toMatchObject({ records: expect.any(Array) });
		// The .dev.vars LLM_CONFIG sets no guardrails, so the shipped ones apply, and the banner says so.
		expect(output).toContain(
			"LLM guardrails (as shipped): input block secrets, block card-numbers; output redact secrets, redact card-numbers",
		);
	});

	it("passes a provider key from .dev.vars on to the provider", async () => {
		stub?.reset();
		const res = await fetch(`${url}/v1/chat/completions`, {
			method: "POST",
			headers: { authorization: `Bearer ${demoToken}`, "content-type": "application/json" },
			// A prompt of its own: the local state (and its LLM response cache) outlives the run.
			body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: `Hello ${uniqueWord()}` }] }),
		});
		expect(res.status, await res.clone().text()).toBe(200);
		expect(stub?.requests.map((r) => r.apiKey)).toEqual([DEV_VARS_KEY]);
	});

	it("keeps the shipped guardrails for a custom LLM_CONFIG: a card number is blocked", async () => {
		stub?.reset();
		const res = await fetch(`${url}/v1/chat/completions`, {
			method: "POST",
			headers: { authorization: `Bearer ${demoToken}`, "content-type": "application/json" },
			body: JSON.stringify({ model: "fast", messages: [{ role: "user", content: "My card is 4111 1111 1111 1111" }] }),
		});
		expect(res.status).toBe(400);
		expect(stub?.requests).toEqual([]);
	});

	it("warns about a .dev.vars name wrangler will not load, and prints no getaddrinfo stack offline", () => {
		expect(output).toContain("warning: .dev.vars sets E2E_UNDECLARED_NAME, which wrangler dev will not load");
		expect(output).not.toMatch(/warning: \.dev\.vars sets (OPENAI_API_KEY|LLM_CONFIG|JWT_HS256_SECRET|ENCRYPTION_KEY)/);
		expect(output).not.toMatch(/Error: getaddrinfo/);
	});

	it("sends / to the docs", async () => {
		const res = await fetch(`${url}/`, { redirect: "manual" });
		expect(res.status).toBe(302);
		expect(res.headers.get("location")).toBe("/docs");
	});

	it("serves /healthz and /v1/me with the printed demo token", async () => {
		const health = await fetch(`${url}/healthz`);
		expect(health.status).toBe(200);
		expect(await health.json()).toEqual({ status: "ok" });

		const me = await fetch(`${url}/v1/me`, { headers: { authorization: `Bearer ${demoToken}` } });
		expect(me.status).toBe(200);
		expect(await me.json()).toMatchObject({
			tenantId: "demo",
			via: "jwt",
			tier: "pro",
			scopes: expect.arrayContaining(["api:read", "api:write"]),
		});
		expect(me.headers.get("ratelimit-policy")).toBeTruthy();

		const anonymous = await fetch(`${url}/v1/me`);
		expect(anonymous.status).toBe(401);
		expect(anonymous.headers.get("content-type")).toContain("application/problem+json");
	});

	it("follows the banner: the operator token creates an API key that then authenticates", async () => {
		// Every request of the demo tenant so far was sent before now, and so was the acquire of its last lease.
		const lastLeaseSentBefore = Date.now();
		const created = await fetch(`${url}/v1/admin/tenants/demo/keys`, {
			method: "POST",
			headers: { authorization: `Bearer ${operatorToken}`, "content-type": "application/json" },
			body: JSON.stringify({ name: "e2e dev-flow key", scopes: ["api:read"] }),
		});
		expect(created.status).toBe(201);
		const key = (await created.json()) as { id: string; key: string };
		expect(key.key).toMatch(/^ew_/);
		try {
			// Later requests, after the demo tenant's last admission lease has lapsed in the isolate, must be
			// admitted too: wait out the lease's life (plus room for workerd's coarse clock), not a guess.
			await until(lastLeaseSentBefore + LEASE_TTL_MS + 250);
			for (const headers of [{ "x-api-key": key.key }, { authorization: `Bearer ${key.key}` }]) {
				const me = await fetch(`${url}/v1/me`, { headers });
				expect(me.status, await me.clone().text()).toBe(200);
				expect(await me.json()).toMatchObject({ tenantId: "demo", via: "api-key", scopes: ["api:read"] });
			}
			const again = await fetch(`${url}/v1/me`, { headers: { authorization: `Bearer ${demoToken}` } });
			expect(again.status, await again.clone().text()).toBe(200);
		} finally {
			// Leave no usable key behind in the local database.
			await fetch(`${url}/v1/admin/tenants/demo/keys/${key.id}`, {
				method: "DELETE",
				headers: { authorization: `Bearer ${operatorToken}` },
			});
		}
	}, 30_000);

	it(
		"stops on SIGTERM, passes it on, and leaves no process behind",
		async () => {
			const pid = child?.pid as number;
			process.kill(pid, "SIGTERM"); // the dev script only: it must pass the signal on to wrangler
			const result = await within(exit, STOP_TIMEOUT_MS);
			expect(result, "npm run dev did not exit after SIGTERM").toBeDefined();
			expect(result?.signal).toBeNull(); // it handled the signal and exited with wrangler's code
			expect(await waitForGroupExit(pid, 10_000), "wrangler/workerd processes were left running").toBe(true);
		},
		STOP_TIMEOUT_MS + 15_000,
	);
});

// Each case is its own short-lived process that shares nothing with the others: they run side by side.
describe.concurrent("npm run token", () => {
	const { JWT_ISSUER, JWT_AUDIENCE } = wranglerVars();

	it("prints a JWT that the .dev.vars secret verifies, with the requested claims", async () => {
		const before = Math.floor(Date.now() / 1000);
		const { status, stdout, stderr } = await runToken([
			"--tenant",
			"t1",
			"--tier",
			"pro",
			"--scope",
			"api:read api:write",
		]);
		expect(status, stderr).toBe(0);
		expect(stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
		const { payload, protectedHeader } = await jwtVerify(stdout, devSecret(), {
			issuer: JWT_ISSUER,
			audience: JWT_AUDIENCE,
			algorithms: ["HS256"],
		});
		expect(protectedHeader.alg).toBe("HS256");
		expect(payload).toMatchObject({ sub: "dev-user", tid: "t1", tier: "pro", scope: "api:read api:write" });
		expect(payload.iat).toBeGreaterThanOrEqual(before - 1);
		expect((payload.exp as number) - (payload.iat as number)).toBe(3600);
	});

	it("honours --sub and --ttl and leaves out tier when not given", async () => {
		const { status, stdout, stderr } = await runToken([
			"--tenant",
			"acme",
			"--sub",
			"alice",
			"--ttl",
			"120",
			"--scope",
			"admin",
		]);
		expect(status, stderr).toBe(0);
		const { payload } = await jwtVerify(stdout, devSecret(), { issuer: JWT_ISSUER, audience: JWT_AUDIENCE });
		expect(payload).toMatchObject({ sub: "alice", tid: "acme", scope: "admin" });
		expect(payload).not.toHaveProperty("tier");
		expect((payload.exp as number) - (payload.iat as number)).toBe(120);
	});

	it("knows exactly the tiers and scopes of src/config", async () => {
		const help = await runToken(["--help"]);
		expect(help.status).toBe(0);
		for (const scope of SCOPES) expect(help.stdout).toContain(scope);
		for (const tier of TIER_NAMES) expect(help.stdout).toContain(tier);
		const every = await runToken(["--tenant", "t1", "--tier", TIER_NAMES[0], "--scope", SCOPES.join(" ")]);
		expect(every.status, every.stderr).toBe(0);
	});

	it.each([
		["an unknown tier", ["--tenant", "t1", "--tier", "gold"], /unknown tier "gold"/],
		["an unknown scope", ["--tenant", "t1", "--scope", "api:read api:delete"], /unknown scope "api:delete"/],
		["an unknown flag", ["--tenant", "t1", "--bogus"], /--bogus/],
		["no tenant", ["--scope", "api:read"], /--tenant/],
		["a bad ttl", ["--tenant", "t1", "--ttl", "-5"], /ttl/],
	])("exits 2 with a usage error on %s", async (_name, args, message) => {
		const { status, stdout, stderr } = await runToken(args);
		expect(status).toBe(2);
		expect(stdout).toBe("");
		expect(stderr).toMatch(message);
	});
});
