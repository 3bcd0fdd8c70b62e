// @ts-check
/**
 * Starts the benchmark's Worker build of the Portkey AI gateway (bench/portkey/build.mjs) under a Miniflare of its
 * own, started as test/helpers/node/gateway.ts starts the gateway's: the same Miniflare and workerd, options read
 * from a wrangler config by wrangler itself (bench/portkey/wrangler.toml), Miniflare's own HTTP listener on
 * 127.0.0.1 and a free port, no `request.cf` fetch, the Worker's console lines passed to `onLog`. Its own instance
 * means its own workerd process, so the benchmark reads its CPU time apart from the gateway's (`pids`).
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { convertV4MiniflareOptions, Log, LogLevel, Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions, unstable_readConfig } from "wrangler";
import { workerdPids } from "../lib.mjs";
import { buildPortkey, PORTKEY_WORKER } from "./build.mjs";

const CONFIG = join(dirname(fileURLToPath(import.meta.url)), "wrangler.toml");
const START_TIMEOUT_MS = 60_000;

/** @typedef {{ level: string; message: string }} WorkerdLog */

/**
 * Builds Portkey's Worker if it is stale and starts it; resolves once it listens.
 * @param {{ onLog?: (log: WorkerdLog) => void; bindings?: Record<string, string>; log?: (line: string) => void }} [options]
 * @returns {Promise<{ url: URL; pids: number[]; miniflare: Miniflare; dispose: () => Promise<void> }>}
 */
export async function startPortkey(options = {}) {
	const scriptPath = await buildPortkey({ ...(options.log ? { log: options.log } : {}) });
	const config = unstable_readConfig({ config: CONFIG });
	if (config.main !== PORTKEY_WORKER) throw new Error(`${CONFIG}: main is ${config.main}, expected ${PORTKEY_WORKER}`);
	const { workerOptions } = unstable_getMiniflareWorkerOptions(config);
	// As the gateway's harness does: the built script, no module rules, the config's [vars] plus the caller's.
	// Module names are paths from rootPath, which may not climb out of it: root the Worker at its script's folder.
	const {
		modulesRules: _rules,
		bindings: _bindings,
		rootPath: _root,
		...worker
	} = /** @type {Record<string, unknown>} */ (workerOptions);
	const before = new Set(workerdPids());
	const miniflare = new Miniflare(
		convertV4MiniflareOptions(
			/** @type {Parameters<typeof convertV4MiniflareOptions>[0]} */ ({
				host: "127.0.0.1",
				port: 0,
				cf: false,
				logRequests: false,
				log: new Log(LogLevel.WARN),
				handleStructuredLogs: (/** @type {WorkerdLog} */ { level, message }) => options.onLog?.({ level, message }),
				workers: [
					{
						...worker,
						name: config.name ?? "portkey-bench",
						modules: true,
						rootPath: dirname(scriptPath),
						scriptPath,
						bindings: { ...config.vars, ...options.bindings },
					},
				],
			}),
		),
	);
	/** @type {Promise<void> | undefined} */
	let disposed;
	const dispose = () => {
		disposed ??= miniflare.dispose();
		return disposed;
	};
	try {
		/** @type {NodeJS.Timeout | undefined} */
		let timer;
		const url = await Promise.race([
			miniflare.ready,
			new Promise((_, reject) => {
				timer = setTimeout(() => reject(new Error("Portkey's Miniflare did not start in time")), START_TIMEOUT_MS);
			}),
		]).finally(() => clearTimeout(timer));
		const pids = workerdPids().filter((pid) => !before.has(pid));
		return { url: /** @type {URL} */ (url), pids, miniflare, dispose };
	} catch (err) {
		await dispose().catch(() => undefined);
		throw err;
	}
}
