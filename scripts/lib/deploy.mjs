// `npm run deploy -- --env <staging|production> [wrangler deploy flags…]`: `wrangler deploy`, but only
// to a named environment. The top level of wrangler.toml is the local (Miniflare) environment and is
// never deployed. Runs with the caller's own wrangler login / CLOUDFLARE_API_TOKEN.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, toolNode, WRANGLER_TOML } from "./project.mjs";

const args = process.argv.slice(2);
const environments = [...readFileSync(WRANGLER_TOML, "utf8").matchAll(/^\[env\.([A-Za-z0-9_-]+)\]\s*$/gm)].map(
	(m) => m[1],
);

function envArg() {
	for (let i = 0; i < args.length; i++) {
		const arg = args[i] ?? "";
		if (arg === "--env" || arg === "-e") return args[i + 1];
		const m = /^(?:--env|-e)=(.*)$/.exec(arg);
		if (m) return m[1];
	}
	return undefined;
}

const env = envArg();
if (!env || !environments.includes(env)) {
	console.error(
		`deploy: ${env ? `unknown environment "${env}"` : "say which environment"}: npm run deploy -- --env <${environments.join("|")}>\n` +
			"The top level of wrangler.toml is the local development environment and is not deployed.",
	);
	process.exit(2);
}

const child = spawn(toolNode(), [join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js"), "deploy", ...args], {
	cwd: ROOT,
	stdio: "inherit",
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
