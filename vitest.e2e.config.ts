import { defineConfig } from "vitest/config";

// End-to-end tests: real HTTP clients (Node's fetch) against the built Worker running under Miniflare
// on a 127.0.0.1 port (test/helpers/node/gateway.ts). Plain Node: no Cloudflare plugin. Files run one
// at a time: each starts its own gateway, and the machine is small.
export default defineConfig({
	test: {
		include: ["test/e2e/**/*.test.ts"],
		environment: "node",
		globalSetup: ["./test/helpers/node/global-setup.ts"],
		fileParallelism: false,
		testTimeout: 60_000,
		hookTimeout: 240_000,
		teardownTimeout: 30_000,
	},
});
