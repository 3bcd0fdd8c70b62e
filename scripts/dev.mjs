// `npm run dev`: everything a fresh clone needs, then the gateway under `wrangler dev`.
//   1. .dev.vars with a random JWT_HS256_SECRET, if there is none (an existing value is never replaced)
//   2. local D1 migrations, non-interactively
//   3. the operator tenant (OPERATOR_TENANT, enterprise) and a demo tenant (pro), idempotently
//   4. `wrangler dev` on 127.0.0.1:<PORT, or the first free port from 8787>
//   5. once /healthz answers: development tokens, the LLM guardrails in force, and curl lines to try
//   6. the cron trigger, which `wrangler dev` never fires: started with `--test-scheduled`, the Worker's
//      `scheduled` handler (the webhook delivery sweep) is called through /__scheduled every minute
// With `--llm-stub` (`npm run dev -- --llm-stub`) it also starts the stub LLM upstream
// (scripts/llm-stub-server.mjs) and points the LLM plane's `openai` and `anthropic` providers at it, so
// /v1/chat/completions, /v1/embeddings and /v1/models can be tried offline.
// SIGINT/SIGTERM are passed to wrangler; this script exits with wrangler's exit code.
import { spawn } from "node:child_process";
import { lookup } from "node:dns/promises";
import { createServer } from "node:net";
import { constants } from "node:os";
import { createInterface } from "node:readline";
import { SHIPPED_GUARDRAILS } from "../src/llm/shipped-guardrails.ts";
import {
	ensureDevSecret,
	ensureEncryptionKey,
	jwtVars,
	killTree,
	ROOT,
	readDevVars,
	readRequiredSecrets,
	readWranglerVars,
	running,
	runWrangler,
	ScriptError,
	spawnWrangler,
} from "./lib/project.mjs";
import { mintToken } from "./lib/token.mjs";

const HOST = "127.0.0.1";
const FIRST_PORT = 8787;
const PORTS_TO_TRY = 100;
const READY_TIMEOUT_MS = 90_000;
const STOP_GRACE_MS = 10_000;
/** Development tokens from the banner live this long. */
const DEV_TOKEN_TTL_S = 12 * 3600;
const DEMO_TENANT = "demo";
/** How often the cron trigger (`* * * * *` in wrangler.toml) is fired locally. */
const CRON_EVERY_MS = 60_000;
const CRON_PATH = "/__scheduled?cron=*+*+*+*+*";
const TENANT_ID = /^[a-z0-9][a-z0-9-]{1,62}$/;

const say = (line = "") => console.log(line);
const step = (line) => console.log(`edgeway: ${line}`);

function portFree(port) {
	return new Promise((resolve) => {
		const server = createServer();
		server.unref();
		server.once("error", () => resolve(false));
		server.listen({ host: HOST, port, exclusive: true }, () => server.close(() => resolve(true)));
	});
}

function requestedPort() {
	const raw = process.env.PORT;
	if (raw === undefined || raw === "") return undefined;
	const port = Number(raw);
	if (!/^\d+$/.test(raw) || port < 1 || port > 65535) throw new ScriptError(`PORT=${raw} is not a TCP port`, 2);
	return port;
}

async function pickPort(wanted) {
	if (wanted !== undefined) {
		if (!(await portFree(wanted))) throw new ScriptError(`PORT=${wanted} is in use on ${HOST}; choose another`);
		return wanted;
	}
	for (let port = FIRST_PORT; port < FIRST_PORT + PORTS_TO_TRY; port++) {
		if (await portFree(port)) return port;
	}
	throw new ScriptError(`no free port on ${HOST} from ${FIRST_PORT} to ${FIRST_PORT + PORTS_TO_TRY - 1}; set PORT`);
}

async function migrate() {
	const { stdout } = await runWrangler(["d1", "migrations", "apply", "DB", "--local"]);
	if (/No migrations to apply/i.test(stdout)) {
		step("local D1 migrations: up to date");
		return;
	}
	const applied = [...new Set([...stdout.matchAll(/│\s*(\S+\.sql)\s*│\s*✅/g)].map((m) => m[1]))];
	step(`local D1 migrations applied: ${applied.length > 0 ? applied.join(", ") : "(see wrangler's output)"}`);
}

const sqlText = (value) => `'${String(value).replaceAll("'", "''")}'`;

/** Seeds the two tenants if missing (a changed tier or status is left alone) and returns how they are now. */
async function seed(operatorTenant) {
	const rows = [
		[operatorTenant, "Edgeway operator", "enterprise"],
		[DEMO_TENANT, "Demo tenant", "pro"],
	];
	const ids = rows.map(([id]) => sqlText(id)).join(", ");
	const sql =
		`INSERT OR IGNORE INTO tenants (id, name, tier) VALUES ${rows.map((r) => `(${r.map(sqlText).join(", ")})`).join(", ")}; ` +
		"SELECT changes() AS inserted; " +
		`SELECT id, tier, status FROM tenants WHERE id IN (${ids}) ORDER BY id;`;
	const { stdout } = await runWrangler(["d1", "execute", "DB", "--local", "--json", "--command", sql]);
	const tenants = new Map();
	let inserted;
	try {
		const results = JSON.parse(stdout);
		inserted = results.at(-2)?.results?.[0]?.inserted;
		for (const row of results.at(-1)?.results ?? []) tenants.set(row.id, row);
	} catch {
		// An unreadable answer only loses the tier/status shown in the banner.
	}
	const names = rows.map(([id]) => `"${id}"`).join(" and ");
	step(
		inserted === 0
			? `tenants ${names} already seeded (left as they are)`
			: `seeded tenants ${names}${inserted === undefined ? "" : ` (${inserted} new)`}`,
	);
	return tenants;
}

/** Fires the Worker's cron once (wrangler dev's /__scheduled); a failure is reported, never fatal. */
async function fireCron(url) {
	try {
		const res = await fetch(`${url}${CRON_PATH}`, { signal: AbortSignal.timeout(30_000) });
		await res.body?.cancel();
		if (res.status !== 200) step(`the scheduled run (webhook sweep) answered ${res.status}`);
	} catch (err) {
		step(`the scheduled run (webhook sweep) failed: ${err instanceof Error ? err.message : err}`);
	}
}

async function healthy(url) {
	try {
		const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
		await res.body?.cancel();
		return res.status === 200;
	} catch {
		return false;
	}
}

function describe(tenants, id, fallbackTier) {
	const t = tenants.get(id);
	return t ? `${t.tier}${t.status === "active" ? "" : `, ${t.status.toUpperCase()}`}` : fallbackTier;
}

/** `block secrets, block card-numbers`, or `none`. */
function describeChecks(checks) {
	return checks.length === 0 ? "none" : checks.map((c) => `${c.action} ${c.name ?? c.kind}`).join(", ");
}

/**
 * The guardrails the Worker runs with, by the rule of src/llm/config.ts: left out → the shipped ones;
 * `false` → no checks; an object → its fields, the shipped ones for the fields it leaves out.
 */
function guardrailsLine(llmConfigText, origin) {
	let guardrails;
	if (llmConfigText) {
		try {
			guardrails = JSON.parse(llmConfigText).guardrails;
		} catch {
			return `LLM guardrails: unknown, LLM_CONFIG (${origin}) is not valid JSON and the LLM plane will refuse it`;
		}
	}
	if (guardrails === false) return `LLM guardrails: OFF (LLM_CONFIG from ${origin} sets "guardrails": false)`;
	const input = guardrails?.input ?? SHIPPED_GUARDRAILS.input;
	const output = guardrails?.output ?? SHIPPED_GUARDRAILS.output;
	const from =
		guardrails === undefined ? "as shipped" : `from LLM_CONFIG (${origin}), shipped ones for what it leaves out`;
	return `LLM guardrails (${from}): input ${describeChecks(input)}; output ${describeChecks(output)}`;
}

/** True when the machine cannot resolve Cloudflare's name, i.e. it is offline for wrangler's purposes. */
async function offline() {
	const timeout = new Promise((resolve) => setTimeout(() => resolve("timeout"), 2000).unref());
	const answer = await Promise.race([lookup("workers.cloudflare.com").catch(() => "failed"), timeout]);
	return answer === "failed" || answer === "timeout";
}

/**
 * Names in .dev.vars that wrangler dev will not load: with `[secrets] required` set it loads only the
 * required secrets and names that wrangler.toml's [vars] declare, and drops the rest without a word.
 */
function unloadedDevVars() {
	const declared = new Set([...Object.keys(readWranglerVars()), ...readRequiredSecrets()]);
	return Object.keys(readDevVars() ?? {}).filter((name) => !declared.has(name));
}

function banner({
	url,
	demoToken,
	demoAdminToken,
	operatorToken,
	tenants,
	operatorTenant,
	expires,
	llmStub,
	guardrails,
}) {
	const demo = describe(tenants, DEMO_TENANT, "pro");
	const operator = describe(tenants, operatorTenant, "enterprise");
	const lines = [
		"",
		"────────────────────────────────────────────────────────────────────────────",
		`Edgeway is ready at ${url}`,
		`  export EDGEWAY_URL=${url}`,
		"",
		`Development tokens (HS256, valid until ${expires}):`,
		`  # tenant "${DEMO_TENANT}" (${demo}), scopes api:read api:write llm`,
		`  export EDGEWAY_DEMO_TOKEN=${demoToken}`,
		`  # tenant "${DEMO_TENANT}" as its own admin, scopes admin webhooks:manage (its audit log, keys, webhooks)`,
		`  export EDGEWAY_DEMO_ADMIN_TOKEN=${demoAdminToken}`,
		`  # operator tenant "${operatorTenant}" (${operator}), scope admin`,
		`  export EDGEWAY_OPERATOR_TOKEN=${operatorToken}`,
		"",
		guardrails,
		"",
		"Try it:",
		`  curl -sS ${url}/healthz`,
		`  curl -sS -H "Authorization: Bearer $EDGEWAY_DEMO_TOKEN" ${url}/v1/me`,
		"  # create an API key for the demo tenant with the operator token (the key is shown once):",
		`  curl -sS -X POST ${url}/v1/admin/tenants/${DEMO_TENANT}/keys \\`,
		'    -H "Authorization: Bearer $EDGEWAY_OPERATOR_TOKEN" -H "content-type: application/json" \\',
		`    -d '{"name":"my first key","scopes":["api:read"]}'`,
		`  curl -sS -H "x-api-key: <the key from that response>" ${url}/v1/me`,
		`  curl -sS -H "Authorization: Bearer $EDGEWAY_DEMO_ADMIN_TOKEN" ${url}/v1/audit`,
		...(llmStub
			? [
					"  # the LLM plane, served by the local stub upstream:",
					`  curl -sS ${url}/v1/chat/completions -H "Authorization: Bearer $EDGEWAY_DEMO_TOKEN" \\`,
					`    -H "content-type: application/json" -d '{"model":"fast","messages":[{"role":"user","content":"Hello"}]}'`,
				]
			: ["  # the LLM plane has no provider here; `npm run dev -- --llm-stub` serves it from a local stub upstream"]),
		"",
		`API docs: ${url}/docs   (OpenAPI document: ${url}/openapi.json)`,
		`Cron (webhook delivery sweep): fired every minute through ${url}/__scheduled`,
		`More tokens: npm run -s token -- --tenant ${DEMO_TENANT} --scope "api:read api:write" [--tier free] [--ttl 3600]`,
		"Stop with Ctrl-C.",
		"────────────────────────────────────────────────────────────────────────────",
		"",
	];
	if (tenants.get(DEMO_TENANT)?.status === "suspended") {
		lines.push(
			`Note: tenant "${DEMO_TENANT}" is suspended in the local D1, so its calls answer 403; resume it with PATCH /v1/admin/tenants/${DEMO_TENANT} "status":"active".`,
			"",
		);
	}
	say(lines.join("\n"));
}

const signalNumber = (signal) => constants.signals[signal] ?? 0;

const STUB_START_TIMEOUT_MS = 30_000;
/** The key the stub is given for both providers: it checks that one is sent, not which. */
const STUB_KEY = "sk-dev-llm-stub";

/** Starts scripts/llm-stub-server.mjs (stopped with wrangler) and resolves with its URLs. */
function startLlmStub() {
	const child = spawn(process.execPath, [`${ROOT}/scripts/llm-stub-server.mjs`], {
		stdio: ["pipe", "pipe", "inherit"],
	});
	running.add(child);
	child.on("exit", () => running.delete(child));
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new ScriptError("the LLM stub did not start")), STUB_START_TIMEOUT_MS);
		child.once("error", (err) => reject(new ScriptError(`could not start the LLM stub: ${err.message}`)));
		createInterface({ input: child.stdout }).once("line", (line) => {
			clearTimeout(timer);
			resolve(JSON.parse(line));
		});
	});
}

/** The LLM plane's configuration (LLM_CONFIG) with the default aliases served by the stub. */
function stubLlmConfig(stub) {
	return {
		providers: {
			openai: { kind: "openai", baseUrl: stub.openaiBaseUrl, apiKeySecret: "OPENAI_API_KEY" },
			anthropic: { kind: "anthropic", baseUrl: stub.anthropicBaseUrl, apiKeySecret: "ANTHROPIC_API_KEY" },
		},
		aliases: {
			fast: { targets: [{ provider: "openai", model: "gpt-4o-mini" }] },
			smart: {
				targets: [
					{ provider: "anthropic", model: "claude-sonnet-4-5" },
					{ provider: "openai", model: "gpt-4.1", priority: 1 },
				],
			},
			embed: { kind: "embeddings", targets: [{ provider: "openai", model: "text-embedding-3-small" }] },
		},
		prices: {
			"openai/gpt-4o-mini": { input: 0.15, output: 0.6 },
			"openai/gpt-4.1": { input: 2, output: 8 },
			"openai/text-embedding-3-small": { input: 0.02, output: 0 },
			"anthropic/claude-sonnet-4-5": { input: 3, output: 15 },
		},
	};
}

async function main() {
	const wantedPort = requestedPort();

	// Chosen now to fail fast, checked again just before wrangler starts.
	let port = await pickPort(wantedPort);

	const secret = ensureDevSecret();
	step(
		secret.action === "created"
			? "created .dev.vars with a random JWT_HS256_SECRET"
			: secret.action === "added"
				? "added a random JWT_HS256_SECRET to .dev.vars"
				: "using the JWT_HS256_SECRET in .dev.vars",
	);
	if (secret.secret.startsWith("replace-me")) {
		step("warning: JWT_HS256_SECRET in .dev.vars is the placeholder from .dev.vars.example; put a random one there");
	}
	if (ensureEncryptionKey() === "added") step("added a random ENCRYPTION_KEY to .dev.vars (seals webhook secrets)");
	const { issuer, audience, operatorTenant } = jwtVars();
	if (!TENANT_ID.test(operatorTenant)) {
		throw new ScriptError(`wrangler.toml: OPERATOR_TENANT "${operatorTenant}" is not a valid tenant id`);
	}

	await migrate();
	const tenants = await seed(operatorTenant);

	const now = Math.floor(Date.now() / 1000);
	const common = { secret: secret.secret, issuer, audience, ttl: DEV_TOKEN_TTL_S, now, tier: undefined };
	const demoToken = await mintToken({
		...common,
		sub: "dev-user",
		tenant: DEMO_TENANT,
		scope: "api:read api:write llm",
	});
	const demoAdminToken = await mintToken({
		...common,
		sub: "dev-admin",
		tenant: DEMO_TENANT,
		scope: "admin webhooks:manage",
	});
	const operatorToken = await mintToken({ ...common, sub: "dev-operator", tenant: operatorTenant, scope: "admin" });
	const expires = new Date((now + DEV_TOKEN_TTL_S) * 1000).toISOString().replace(/\.\d+Z$/, "Z");

	if (!(await portFree(port))) port = await pickPort(wantedPort);
	const url = `http://${HOST}:${port}`;
	const vars = [];
	const llmStub = process.argv.includes("--llm-stub");
	const devVars = readDevVars() ?? {};
	for (const name of unloadedDevVars()) {
		step(
			`warning: .dev.vars sets ${name}, which wrangler dev will not load: only names declared in wrangler.toml ` +
				`([vars] or [secrets] required) are; add \`${name} = ""\` to its [vars] (the .dev.vars value wins)`,
		);
	}
	let guardrails = devVars.LLM_CONFIG
		? guardrailsLine(devVars.LLM_CONFIG, ".dev.vars")
		: guardrailsLine(readWranglerVars().LLM_CONFIG, "wrangler.toml");
	if (llmStub) {
		const stub = await startLlmStub();
		step(`LLM stub upstream on ${stub.url}: the openai and anthropic providers point at it`);
		const stubConfig = JSON.stringify(stubLlmConfig(stub));
		guardrails = guardrailsLine(stubConfig, "--llm-stub");
		vars.push(
			"--var",
			`LLM_CONFIG:${stubConfig}`,
			"--var",
			`OPENAI_API_KEY:${STUB_KEY}`,
			"--var",
			`ANTHROPIC_API_KEY:${STUB_KEY}`,
		);
	}
	// Offline, wrangler's download of the `Request.cf` placeholder fails with a getaddrinfo stack trace
	// on every start and reload; it is harmless, so it is switched off instead of printed.
	const env = {};
	if (await offline()) {
		env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
		step("offline: wrangler will not download the Request.cf object (request.cf holds a placeholder)");
	}
	step(`starting wrangler dev on ${url}`);
	const server = spawnWrangler(["dev", "--ip", HOST, "--port", String(port), "--test-scheduled", ...vars], {
		stdio: "inherit",
		env,
	});

	let exited = false;
	const exit = new Promise((resolve) => {
		server.on("exit", (code, signal) => {
			exited = true;
			resolve(code ?? 128 + signalNumber(signal));
		});
		server.on("error", (err) => {
			console.error(`edgeway: could not start wrangler: ${err.message}`);
			exited = true;
			resolve(1);
		});
	});

	const deadline = Date.now() + READY_TIMEOUT_MS;
	let ready = false;
	while (!exited && Date.now() < deadline) {
		if (await healthy(url)) {
			ready = true;
			break;
		}
		await new Promise((r) => setTimeout(r, 300));
	}
	if (ready && !exited) {
		banner({ url, demoToken, demoAdminToken, operatorToken, tenants, operatorTenant, expires, llmStub, guardrails });
		// One run now (deliveries left from an earlier session), then every minute until wrangler exits.
		let firing = fireCron(url);
		const cron = setInterval(() => {
			firing = firing.then(() => (exited ? undefined : fireCron(url)));
		}, CRON_EVERY_MS);
		exit.then(() => clearInterval(cron));
	} else if (!exited) {
		console.error(`edgeway: ${url}/healthz did not answer within ${READY_TIMEOUT_MS / 1000} s; stopping wrangler`);
		stop("SIGTERM");
		await exit;
		return 1;
	}
	return exit;
}

let stopping = false;
let stoppedBy;
/** Passes a signal to wrangler; a second signal, or wrangler still running after a grace period, kills it. */
function stop(signal) {
	const force = stopping;
	stopping = true;
	stoppedBy ??= signal;
	const kill = () => {
		for (const child of running) if (child.pid) killTree(child.pid, "SIGKILL");
	};
	if (force) kill();
	else {
		for (const child of running) child.kill(signal);
		setTimeout(kill, STOP_GRACE_MS).unref();
	}
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
	process.on(signal, () => {
		if (running.size === 0) process.exit(128 + signalNumber(signal));
		stop(signal);
	});
}

main().then(
	(code) => process.exit(code),
	(err) => {
		for (const child of running) child.kill("SIGTERM");
		if (stoppedBy) process.exit(128 + signalNumber(stoppedBy));
		console.error(err instanceof ScriptError ? `edgeway: ${err.message}` : err);
		process.exit(err instanceof ScriptError ? err.exitCode : 1);
	},
);
