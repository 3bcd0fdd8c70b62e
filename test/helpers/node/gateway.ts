/**
 * The gateway as a real client sees it: the built Worker bundle running under Miniflare, on a
 * 127.0.0.1 port, with every binding of wrangler.toml's top-level (local) environment, a migrated
 * D1, and helpers to seed tenants and mint JWTs. Used by the e2e tests (vitest, Node) and by
 * `bench/gateway.mjs` (plain Node, which loads this file through Node's built-in type stripping:
 * keep the syntax erasable and relative imports spelled with `.ts`).
 *
 * Two isolates: with `isolates: 2` a second copy of the gateway runs as a separate Worker (its own
 * V8 isolate, module state and caches) on its own direct socket, sharing the first Worker's D1, R2,
 * queue and — through `scriptName` — its RateLimiter Durable Object namespace, as two edge isolates do.
 */
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SignJWT } from "jose";
import { convertV4MiniflareOptions, Log, LogLevel, Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions, unstable_readConfig, unstable_splitSqlQuery } from "wrangler";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const BUILD_DIR = join(ROOT, ".tmp", "e2e-build");
const WRANGLER_TOML = join(ROOT, "wrangler.toml");
const MIGRATIONS_DIR = join(ROOT, "migrations");
/** What the bundle is made from: when any of these is newer than the bundle, it is rebuilt. */
const BUILD_INPUTS = [
	"src",
	"workers",
	"durable-objects",
	"bench/worker",
	"scripts/bundle",
	"wrangler.toml",
	"package-lock.json",
	"tsconfig.json",
];
const BUILD_TIMEOUT_MS = 180_000;
const START_TIMEOUT_MS = 60_000;
const LOG_LINES_KEPT = 2000;

/** The local D1 as Miniflare hands it to Node. */
export type D1Database = Awaited<ReturnType<Miniflare["getD1Database"]>>;

/** A test value of the development HS256 secret (the Worker wants ≥ 32 characters). */
export const TEST_JWT_SECRET = "e2e-test-secret-e2e-test-secret-0123456789abcdef";
/** 32 bytes, base64url: seals webhook secrets at rest in the e2e gateway. */
export const TEST_ENCRYPTION_KEY = "dGVzdC1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcy0hISE";

export type TierName = "free" | "pro" | "enterprise";

/** Operator overrides of a tier's limits, as stored in `tenants.limits`. */
export interface Limits {
	rate?: { perSecond: number; burst: number };
	monthlyQuota?: number;
	llmBudget?: { monthlyTokens?: number | null; monthlyMicroUsd?: number | null };
}

export interface SeedTenant {
	id: string;
	tier: TierName;
	limits?: Limits | null;
	name?: string;
	status?: "active" | "suspended";
}

export interface MintJwt {
	tenantId: string;
	/** Space-separated in the `scope` claim. */
	scopes: readonly string[];
	tier?: TierName;
	sub?: string;
	/** Lifetime in seconds (default 3600). */
	expiresInS?: number;
}

export interface WorkerdLog {
	level: string;
	message: string;
}

export interface GatewayOptions {
	/** 1 (default), or 2 gateway Workers in separate isolates sharing one RateLimiter namespace. */
	isolates?: 1 | 2;
	/** `auto` (default): build unless a bundle newer than every source exists; `always`; `never`. */
	build?: "auto" | "always" | "never";
	/**
	 * The Worker script to bundle and run, from the repository root: wrangler.toml's `main` (default), or
	 * `workers/bench.ts`, the benchmarks' entry with its extra routes. Either runs with wrangler.toml's bindings.
	 */
	main?: string;
	/** Extra or overriding bindings (vars, secrets) on top of wrangler.toml's `[vars]`. */
	bindings?: Record<string, string>;
	/**
	 * Serve `public/` through the static-assets layer, as configured (default true). `false` drops that
	 * layer (and the ASSETS binding): requests go straight to the Worker, e.g. to benchmark the Worker alone.
	 */
	assets?: boolean;
	/** Port of Miniflare's own HTTP listener; 0 (default) lets the OS pick a free one. */
	port?: number;
	/**
	 * Where the Worker's console output goes. Default: kept in memory (see {@link Gateway.logs}) and
	 * printed too when EDGEWAY_E2E_LOGS=1.
	 */
	onLog?: (log: WorkerdLog) => void;
}

export interface Gateway {
	/** Miniflare's own HTTP listener; it serves the first gateway Worker. */
	url: URL;
	/** One URL per isolate: `url`, then the second Worker's direct socket. */
	urls: URL[];
	miniflare: Miniflare;
	/** The `[vars]` and secrets the Worker was given. */
	vars: Readonly<Record<string, unknown>>;
	/** Inserts or replaces a tenant row in D1. Isolates cache tenants for 5 s: seed before first use. */
	seedTenant(tenant: SeedTenant): Promise<void>;
	/** An HS256 JWT the gateway accepts (signed with its JWT_HS256_SECRET; iss/aud from its vars). */
	mintJwt(claims: MintJwt): Promise<string>;
	/** The local D1 (already migrated). */
	db(): Promise<D1Database>;
	/** The Worker's recent console lines (when no `onLog` was given). */
	logs(): WorkerdLog[];
	dispose(): Promise<void>;
}

// ---------------------------------------------------------------- build

function newestMtime(path: string): number {
	let st: ReturnType<typeof statSync>;
	try {
		st = statSync(path);
	} catch {
		return 0;
	}
	if (!st.isDirectory()) return st.mtimeMs;
	let newest = st.mtimeMs;
	for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
	return newest;
}

function mtime(path: string): number {
	try {
		return statSync(path).mtimeMs;
	} catch {
		return 0;
	}
}

/** Environment for wrangler child processes: no metrics, and its own files kept inside the project. */
function wranglerEnv(): NodeJS.ProcessEnv {
	return {
		...process.env,
		WRANGLER_SEND_METRICS: "false",
		WRANGLER_LOG_PATH: process.env.WRANGLER_LOG_PATH ?? join(ROOT, ".tmp", "wrangler-logs"),
		XDG_CONFIG_HOME: process.env.XDG_CONFIG_HOME ?? join(ROOT, ".tmp", "xdg-config"),
	};
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<void> {
	return new Promise((resolvePromise, reject) => {
		const child = spawn(cmd, args, { cwd: ROOT, env: wranglerEnv(), stdio: ["ignore", "pipe", "pipe"] });
		let output = "";
		const keep = (chunk: Buffer) => {
			output = (output + chunk.toString()).slice(-20_000);
		};
		child.stdout.on("data", keep);
		child.stderr.on("data", keep);
		const timer = setTimeout(() => {
			child.kill("SIGKILL");
			reject(new Error(`${basename(cmd)} ${args.join(" ")} timed out after ${timeoutMs} ms\n${output}`));
		}, timeoutMs);
		child.once("error", (err) => {
			clearTimeout(timer);
			reject(err);
		});
		child.once("exit", (code, signal) => {
			clearTimeout(timer);
			if (code === 0) resolvePromise();
			else reject(new Error(`${basename(cmd)} ${args.join(" ")} failed (${signal ?? code})\n${output}`));
		});
	});
}

/** The bundle file wrangler writes for `main` (workers/gateway.ts → gateway.js). */
function bundleName(main: string): string {
	return `${basename(main).replace(/\.[cm]?[jt]sx?$/, "")}.js`;
}

const building = new Map<string, Promise<string>>();

/**
 * Bundles the Worker as `wrangler deploy --dry-run` does, for wrangler.toml's top-level environment
 * (`--env=""`: the staging/production environments have remote-only bindings), into
 * `.tmp/e2e-build/`: wrangler.toml's `main`, or the script `main` given (as `wrangler deploy <script>`).
 * Once per process and script; skipped (`auto`) when the bundle is newer than its sources.
 * Safe to run from several processes at once: each builds into its own directory and renames the
 * finished files into place (a rename replaces a file atomically).
 */
export function buildWorker(mode: "auto" | "always" | "never" = "auto", main?: string): Promise<string> {
	const key = main ?? "";
	const running = building.get(key);
	if (running) return running;
	const build = (async () => {
		const config = unstable_readConfig({ config: WRANGLER_TOML });
		if (!config.main) throw new Error("wrangler.toml has no main");
		const name = bundleName(main ?? config.main);
		const bundle = join(BUILD_DIR, name);
		const built = mtime(bundle);
		if (mode === "never") {
			if (built === 0) throw new Error(`no bundle at ${bundle}, and build is "never"`);
			return bundle;
		}
		if (mode === "auto" && built > Math.max(...BUILD_INPUTS.map((p) => newestMtime(join(ROOT, p))))) return bundle;
		const staging = join(BUILD_DIR, `.staging-${process.pid}-${Date.now()}`);
		mkdirSync(staging, { recursive: true });
		try {
			// The project's wrangler CLI on the Node running this process (the pinned Node 24 under npm scripts).
			const pkg = createRequire(import.meta.url).resolve("wrangler/package.json");
			const wrangler = join(
				dirname(pkg),
				(JSON.parse(readFileSync(pkg, "utf8")) as { bin: { wrangler: string } }).bin.wrangler,
			);
			await run(
				process.execPath,
				[
					wrangler,
					"deploy",
					...(main ? [main] : []),
					"--dry-run",
					"--env=",
					"--outdir",
					staging,
					"--config",
					WRANGLER_TOML,
				],
				BUILD_TIMEOUT_MS,
			);
			// Map first, then the bundle: a reader that sees the new bundle also sees its map.
			for (const file of [`${name}.map`, name]) {
				try {
					renameSync(join(staging, file), join(BUILD_DIR, file));
				} catch (err) {
					if (file === name) throw err;
				}
			}
		} finally {
			rmSync(staging, { recursive: true, force: true });
		}
		return bundle;
	})();
	building.set(key, build);
	build.catch(() => building.delete(key));
	return build;
}

// ---------------------------------------------------------------- D1 migrations

/** The statements of a migration file: drizzle's `--> statement-breakpoint` chunks, each split as wrangler does. */
export function migrationStatements(sql: string): string[] {
	return sql
		.split("--> statement-breakpoint")
		.flatMap((chunk) => unstable_splitSqlQuery(chunk))
		.map((s) => s.trim())
		.filter((s) => s.replace(/^\s*--.*$/gm, "").trim().length > 0);
}

/**
 * Applies `migrations/*.sql` in name order, like `wrangler d1 migrations apply`: each file once,
 * recorded in `d1_migrations`.
 */
export async function applyMigrations(db: D1Database, dir = MIGRATIONS_DIR): Promise<string[]> {
	await db
		.prepare(
			`CREATE TABLE IF NOT EXISTS d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE,
			 applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)`,
		)
		.run();
	const done = new Set(
		(await db.prepare("SELECT name FROM d1_migrations").all<{ name: string }>()).results.map((r) => r.name),
	);
	const applied: string[] = [];
	for (const file of readdirSync(dir)
		.filter((f) => f.endsWith(".sql"))
		.sort()) {
		if (done.has(file)) continue;
		const statements = migrationStatements(readFileSync(join(dir, file), "utf8")).map((s) => db.prepare(s));
		await db.batch([...statements, db.prepare("INSERT INTO d1_migrations (name) VALUES (?)").bind(file)]);
		applied.push(file);
	}
	return applied;
}

// ---------------------------------------------------------------- Miniflare

type V4Options = Parameters<typeof convertV4MiniflareOptions>[0];
type V4Worker = Record<string, unknown> & { durableObjects?: Record<string, unknown> };

/** wrangler.toml's top-level environment as Miniflare (v4-style) worker options, read offline by wrangler itself. */
function configuredWorker(): { name: string; main: string; vars: Record<string, unknown>; worker: V4Worker } {
	const config = unstable_readConfig({ config: WRANGLER_TOML });
	if (!config.main) throw new Error("wrangler.toml has no main");
	// Wrangler warns about secrets it cannot find (we pass our own); keep it quiet for this call only.
	const previous = process.env.WRANGLER_LOG;
	process.env.WRANGLER_LOG = "error";
	let options: ReturnType<typeof unstable_getMiniflareWorkerOptions>;
	try {
		options = unstable_getMiniflareWorkerOptions(config);
	} finally {
		if (previous === undefined) delete process.env.WRANGLER_LOG;
		else process.env.WRANGLER_LOG = previous;
	}
	if (options.externalWorkers.length > 0) throw new Error("external workers are not supported by this harness");
	// Bundle module rules do not apply to a built bundle; the bindings wrangler computed also hold
	// `.dev.vars`/process.env values, which are replaced by wrangler.toml's [vars] plus the test secrets.
	const { modulesRules: _rules, bindings: _bindings, ...worker } = options.workerOptions as V4Worker;
	return { name: config.name ?? "edgeway", main: config.main, vars: { ...config.vars }, worker };
}

/** The second gateway Worker: same code and bindings, the first Worker's Durable Object classes, no queue consumer. */
function secondIsolate(first: V4Worker, firstName: string): V4Worker {
	const durableObjects: Record<string, unknown> = {};
	for (const [binding, designator] of Object.entries(first.durableObjects ?? {})) {
		const d = typeof designator === "string" ? { className: designator } : (designator as Record<string, unknown>);
		durableObjects[binding] = d.scriptName ? d : { ...d, scriptName: firstName };
	}
	return {
		...first,
		name: `${firstName}-2`,
		durableObjects,
		additionalUnboundDurableObjects: [],
		queueConsumers: {},
		unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
	};
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
	});
	return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Builds (if needed) and starts the gateway; resolves once D1 is migrated and it listens. */
export async function startGateway(options: GatewayOptions = {}): Promise<Gateway> {
	const bundle = await buildWorker(options.build, options.main);
	const { name, vars: configVars, worker } = configuredWorker();
	const vars: Record<string, unknown> = {
		...configVars,
		JWT_HS256_SECRET: TEST_JWT_SECRET,
		ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
		...options.bindings,
	};

	const kept: WorkerdLog[] = [];
	const echo = process.env.EDGEWAY_E2E_LOGS === "1";
	const onLog =
		options.onLog ??
		((log: WorkerdLog) => {
			kept.push(log);
			if (kept.length > LOG_LINES_KEPT) kept.splice(0, kept.length - LOG_LINES_KEPT);
			if (echo) console.log(`[workerd:${log.level}] ${log.message}`);
		});

	const { assets, ...rest } = worker;
	const first: V4Worker = {
		...rest,
		...(options.assets === false ? {} : { assets }),
		name,
		modules: true,
		scriptPath: bundle,
		bindings: vars,
	};
	const workers = [first];
	if (options.isolates === 2) workers.push(secondIsolate(first, name));

	const miniflare = new Miniflare(
		convertV4MiniflareOptions({
			host: "127.0.0.1",
			port: options.port ?? 0,
			// A placeholder `request.cf`: the real one would be fetched from the network.
			cf: false,
			logRequests: false,
			log: new Log(LogLevel.WARN),
			handleStructuredLogs: ({ level, message }) => onLog({ level, message }),
			workers,
		} as V4Options),
	);
	let disposed: Promise<void> | undefined;
	const dispose = () => {
		disposed ??= miniflare.dispose();
		return disposed;
	};
	try {
		const url = await withTimeout(miniflare.ready, START_TIMEOUT_MS, "Miniflare start-up");
		const urls = [url];
		if (options.isolates === 2) urls.push(await miniflare.unsafeGetDirectURL(`${name}-2`));
		const db = () => miniflare.getD1Database("DB", name);
		await applyMigrations(await db());

		const secret = new TextEncoder().encode(String(vars.JWT_HS256_SECRET));
		return {
			url,
			urls,
			miniflare,
			vars,
			db,
			logs: () => [...kept],
			dispose,
			async seedTenant(t) {
				await (await db())
					.prepare(
						`INSERT INTO tenants (id, name, tier, status, limits) VALUES (?, ?, ?, ?, ?)
						 ON CONFLICT(id) DO UPDATE SET name = excluded.name, tier = excluded.tier,
						 status = excluded.status, limits = excluded.limits`,
					)
					.bind(
						t.id,
						t.name ?? `Tenant ${t.id}`,
						t.tier,
						t.status ?? "active",
						t.limits ? JSON.stringify(t.limits) : null,
					)
					.run();
			},
			mintJwt(c) {
				const now = Math.floor(Date.now() / 1000);
				return new SignJWT({ tid: c.tenantId, scope: c.scopes.join(" "), ...(c.tier ? { tier: c.tier } : {}) })
					.setProtectedHeader({ alg: "HS256", typ: "JWT" })
					.setSubject(c.sub ?? "e2e-user")
					.setIssuer(String(vars.JWT_ISSUER))
					.setAudience(String(vars.JWT_AUDIENCE))
					.setIssuedAt(now)
					.setExpirationTime(now + (c.expiresInS ?? 3600))
					.sign(secret);
			},
		};
	} catch (err) {
		await dispose().catch(() => undefined);
		throw err;
	}
}

// ---------------------------------------------------------------- webhooks

export type WebhookSourceName = "github" | "stripe" | "slack" | "standard" | "hmac";

export interface RegisterWebhookEndpoint {
	name: string;
	source: WebhookSourceName;
	/** One, or two during a rotation (Standard Webhooks: `whsec_<base64>`). */
	secrets: readonly string[];
	config?: Record<string, unknown>;
	destination?: { url: string };
}

/** What `POST /v1/webhooks/endpoints` answers (the secrets are never returned). */
export interface WebhookEndpointCreated {
	id: string;
	tenantId: string;
	name: string;
	source: WebhookSourceName;
	activeSecrets: number;
	status: "active" | "disabled";
	ingestPath: string;
	destinationSecret?: string;
}

/**
 * Registers a webhook endpoint through the tenant API, as a tenant would: `POST /v1/webhooks/endpoints`
 * with a bearer credential holding scope `webhooks:manage` (no admin). Throws unless it answers 201.
 */
export async function registerWebhookEndpoint(
	base: URL,
	token: string,
	endpoint: RegisterWebhookEndpoint,
): Promise<WebhookEndpointCreated> {
	const res = await fetch(new URL("/v1/webhooks/endpoints", base), {
		method: "POST",
		headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
		body: JSON.stringify(endpoint),
	});
	const text = await res.text();
	if (res.status !== 201) throw new Error(`POST /v1/webhooks/endpoints answered ${res.status}: ${text}`);
	return JSON.parse(text) as WebhookEndpointCreated;
}

/**
 * GitHub's `X-Hub-Signature-256` value for a raw body: `sha256=` and the hex HMAC-SHA256 keyed with the
 * secret's UTF-8 bytes. Synchronous (node:crypto), for signing many bodies up front; the e2e tests check
 * it against `@octokit/webhooks-methods`' `sign`.
 */
export function githubSignature(secret: string, body: string | Uint8Array): string {
	return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** The headers GitHub sends with a delivery, signed for `body`. */
export function githubDeliveryHeaders(options: {
	secret: string;
	body: string | Uint8Array;
	deliveryId: string;
	event?: string;
}): Record<string, string> {
	return {
		"content-type": "application/json",
		"user-agent": "GitHub-Hookshot/5f1c3a2",
		"x-github-event": options.event ?? "push",
		"x-github-delivery": options.deliveryId,
		"x-hub-signature-256": githubSignature(options.secret, options.body),
	};
}
