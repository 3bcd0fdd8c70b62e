// What the development scripts share about the project: where it is, its wrangler vars, its local
// secrets (.dev.vars), the known tiers and scopes, and how to run wrangler on the project's Node.
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DEV_VARS = join(ROOT, ".dev.vars");
export const WRANGLER_TOML = join(ROOT, "wrangler.toml");

/** Thrown for a problem the user can fix; the scripts print `message` and exit with `exitCode`. */
export class ScriptError extends Error {
	constructor(message, exitCode = 1) {
		super(message);
		this.name = "ScriptError";
		this.exitCode = exitCode;
	}
}

// ---------------------------------------------------------------- wrangler.toml

/** Reads one TOML string value (basic "…" or literal '…'), followed only by an optional comment. */
function tomlString(raw, where) {
	const text = raw.trim();
	let m = /^"((?:[^"\\]|\\.)*)"\s*(?:#.*)?$/.exec(text);
	if (m) {
		const body = (m[1] ?? "").replace(/\\U([0-9a-fA-F]{8})/g, (_, hex) =>
			String.fromCodePoint(Number.parseInt(hex, 16)),
		);
		return JSON.parse(`"${body}"`);
	}
	m = /^'([^']*)'\s*(?:#.*)?$/.exec(text);
	if (m) return m[1] ?? "";
	throw new ScriptError(`wrangler.toml: ${where} is not a string; vars are strings`);
}

/**
 * The `[vars]` table of wrangler.toml: the top-level one, or `[env.<name>.vars]` for a named
 * environment. Only what vars hold is understood (`KEY = "string"` lines and comments).
 */
export function readWranglerVars(envName) {
	const header = envName ? `[env.${envName}.vars]` : "[vars]";
	const lines = readFileSync(WRANGLER_TOML, "utf8").split(/\r?\n/);
	const start = lines.findIndex((l) => l.trim() === header);
	if (start < 0) throw new ScriptError(`wrangler.toml has no ${header} table`);
	const vars = {};
	for (const line of lines.slice(start + 1)) {
		const t = line.trim();
		if (t.startsWith("[")) break;
		if (t === "" || t.startsWith("#")) continue;
		const m = /^([A-Za-z0-9_-]+|"[^"]+")\s*=\s*(.*)$/.exec(t);
		if (!m) throw new ScriptError(`wrangler.toml: cannot read this line of ${header}: ${t}`);
		const key = (m[1] ?? "").replace(/^"|"$/g, "");
		vars[key] = tomlString(m[2] ?? "", `${header} ${key}`);
	}
	return vars;
}

/** The names in wrangler.toml's top-level `[secrets] required = [...]` (empty when there is none). */
export function readRequiredSecrets() {
	const text = readFileSync(WRANGLER_TOML, "utf8");
	const list = /^\[secrets\]\s*\n\s*required\s*=\s*\[([^\]]*)\]/m.exec(text)?.[1] ?? "";
	return [...list.matchAll(/"([^"]+)"/g)].map((m) => m[1] ?? "");
}

/** The vars the token needs, present and non-empty. */
export function jwtVars(envName) {
	const vars = readWranglerVars(envName);
	for (const name of ["JWT_ISSUER", "JWT_AUDIENCE", "OPERATOR_TENANT"]) {
		if (!vars[name])
			throw new ScriptError(`wrangler.toml: ${envName ? `[env.${envName}.vars]` : "[vars]"} lacks ${name}`);
	}
	return { issuer: vars.JWT_ISSUER, audience: vars.JWT_AUDIENCE, operatorTenant: vars.OPERATOR_TENANT, vars };
}

// ---------------------------------------------------------------- tiers and scopes

/** A `export const NAME = ["a", "b"] as const;` list read from a source file of src/config. */
function constList(file, name) {
	const path = join(ROOT, "src", "config", file);
	const source = readFileSync(path, "utf8");
	const m = new RegExp(`export const ${name}\\s*=\\s*(\\[[^\\]]*\\])\\s*as const`).exec(source);
	if (!m) throw new ScriptError(`cannot find the ${name} list in src/config/${file}`);
	try {
		const list = JSON.parse((m[1] ?? "").replace(/,\s*\]$/, "]"));
		if (Array.isArray(list) && list.length > 0 && list.every((v) => typeof v === "string")) return list;
	} catch {
		// fall through
	}
	throw new ScriptError(`cannot read the ${name} list in src/config/${file}`);
}

/** The tier names of src/config/tiers.ts, lowest rank first. */
export function knownTiers() {
	return constList("tiers.ts", "TIER_NAMES");
}

/** The scopes of src/config/scopes.ts. */
export function knownScopes() {
	return constList("scopes.ts", "SCOPES");
}

// ---------------------------------------------------------------- .dev.vars

/** Parses dotenv text (`KEY=value`, optional quotes, `#` comments) as wrangler reads .dev.vars. */
export function parseDotenv(text) {
	const out = {};
	for (const line of text.split(/\r?\n/)) {
		const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
		if (!m) continue;
		let value = (m[2] ?? "").trim();
		const quoted = /^(["'`])([\s\S]*)\1$/.exec(value);
		if (quoted) value = quoted[2] ?? "";
		else value = value.replace(/\s+#.*$/, "");
		out[m[1] ?? ""] = value;
	}
	return out;
}

export function readDevVars() {
	return existsSync(DEV_VARS) ? parseDotenv(readFileSync(DEV_VARS, "utf8")) : undefined;
}

/** Smallest secret the gateway accepts (src/config/env.ts). */
export const MIN_SECRET_LENGTH = 32;

const DEV_VARS_HEADER = `# Local secrets for \`wrangler dev\`, created by \`npm run dev\` / \`npm run token\`.
# Gitignored: never commit it. See .dev.vars.example.
`;

/**
 * Makes sure .dev.vars holds a JWT_HS256_SECRET: creates the file with a random 64-hex-character
 * secret when it does not exist, adds the line when an existing file lacks it, and never replaces a
 * value that is there. Returns the secret and what was done.
 */
export function ensureDevSecret() {
	const secret = randomBytes(32).toString("hex");
	if (!existsSync(DEV_VARS)) {
		writeFileSync(DEV_VARS, `${DEV_VARS_HEADER}JWT_HS256_SECRET=${secret}\n`, { mode: 0o600 });
		return { secret, action: "created" };
	}
	const current = readDevVars()?.JWT_HS256_SECRET;
	if (current === undefined) {
		const text = readFileSync(DEV_VARS, "utf8");
		appendFileSync(DEV_VARS, `${text === "" || text.endsWith("\n") ? "" : "\n"}JWT_HS256_SECRET=${secret}\n`);
		return { secret, action: "added" };
	}
	if (current.length < MIN_SECRET_LENGTH) {
		throw new ScriptError(
			`.dev.vars: JWT_HS256_SECRET must be at least ${MIN_SECRET_LENGTH} characters (the gateway refuses shorter ones). ` +
				"Fix it, or delete .dev.vars and run `npm run dev` to generate one.",
		);
	}
	return { secret: current, action: "kept" };
}

/**
 * Makes sure .dev.vars holds an ENCRYPTION_KEY (32 random bytes, base64url), which seals webhook
 * secrets at rest; adds it when missing and never replaces one. Call after {@link ensureDevSecret}.
 */
export function ensureEncryptionKey() {
	if (readDevVars()?.ENCRYPTION_KEY !== undefined) return "kept";
	const text = existsSync(DEV_VARS) ? readFileSync(DEV_VARS, "utf8") : DEV_VARS_HEADER;
	const key = randomBytes(32).toString("base64url");
	if (!existsSync(DEV_VARS)) writeFileSync(DEV_VARS, text, { mode: 0o600 });
	appendFileSync(DEV_VARS, `${text === "" || text.endsWith("\n") ? "" : "\n"}ENCRYPTION_KEY=${key}\n`);
	return "added";
}

// ---------------------------------------------------------------- running wrangler

/** The Node binary for tools: the `node` devDependency (Node 24) when installed, else this one. */
export function toolNode() {
	const local = join(ROOT, "node_modules", ".bin", "node");
	return existsSync(local) ? local : process.execPath;
}

/** The environment wrangler runs with: no telemetry, its config and logs inside the project. */
export function wranglerEnv(extra = {}) {
	return {
		...process.env,
		WRANGLER_SEND_METRICS: "false",
		XDG_CONFIG_HOME: join(ROOT, ".wrangler", "config"),
		WRANGLER_LOG_PATH: join(ROOT, ".wrangler", "logs"),
		...extra,
	};
}

/**
 * Starts `wrangler <args>` — what `npx wrangler` resolves to (node_modules/wrangler/bin/wrangler.js) —
 * on the project's Node, from the project root.
 */
export function spawnWrangler(args, options = {}) {
	const bin = join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
	if (!existsSync(bin)) throw new ScriptError("wrangler is not installed: run `npm install` first");
	const child = spawn(toolNode(), [bin, ...args], { cwd: ROOT, ...options, env: wranglerEnv(options.env) });
	running.add(child);
	child.on("exit", () => running.delete(child));
	return child;
}

/** Wrangler processes started by {@link spawnWrangler} that have not exited yet. */
export const running = new Set();

/**
 * Runs a short wrangler command non-interactively (no stdin, CI=true: confirmations take their
 * default instead of waiting for a prompt) and resolves with its output; rejects on a non-zero exit
 * or after `timeoutMs`.
 */
export function runWrangler(args, { timeoutMs = 120_000 } = {}) {
	return new Promise((resolve, reject) => {
		const child = spawnWrangler(args, { stdio: ["ignore", "pipe", "pipe"], env: { CI: "true" } });
		let stdout = "";
		let stderr = "";
		child.stdout.on("data", (d) => {
			stdout += d;
		});
		child.stderr.on("data", (d) => {
			stderr += d;
		});
		const timer = setTimeout(() => {
			child.kill("SIGTERM");
			setTimeout(() => child.kill("SIGKILL"), 5000).unref();
			reject(new ScriptError(`wrangler ${args.join(" ")} did not finish within ${timeoutMs / 1000} s`));
		}, timeoutMs);
		child.on("error", (err) => {
			clearTimeout(timer);
			reject(err);
		});
		child.on("close", (code, signal) => {
			clearTimeout(timer);
			if (code === 0) resolve({ stdout, stderr });
			else {
				const output = `${stdout}\n${stderr}`.trim();
				reject(
					new ScriptError(`wrangler ${args.join(" ")} failed (${signal ?? `exit ${code}`}):\n${output}`, code || 1),
				);
			}
		});
	});
}

/** Every process descended from `pid` (children first), from `ps`; empty when `ps` is not available. */
function descendants(pid) {
	let table;
	try {
		table = execFileSync("ps", ["-A", "-o", "pid=,ppid="], { encoding: "utf8", timeout: 5000 });
	} catch {
		return [];
	}
	const children = new Map();
	for (const line of table.split("\n")) {
		const [child, parent] = line.trim().split(/\s+/).map(Number);
		if (!child || parent === undefined) continue;
		children.set(parent, [...(children.get(parent) ?? []), child]);
	}
	const out = [];
	const queue = [pid];
	while (queue.length > 0) {
		for (const child of children.get(queue.shift()) ?? []) {
			out.push(child);
			queue.push(child);
		}
	}
	return out;
}

/** Sends `signal` to a process and everything it started (SIGKILL cannot be passed on, so it goes to each). */
export function killTree(pid, signal) {
	for (const p of [...descendants(pid), pid]) {
		try {
			process.kill(p, signal);
		} catch {
			// already gone
		}
	}
}
