import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Unit and integration tests, inside workerd, against the real local D1, R2, Queues and Durable Objects.
export default defineConfig(async () => ({
	plugins: [
		cloudflareTest({
			wrangler: { configPath: "./wrangler.toml" },
			remoteBindings: false,
			miniflare: {
				bindings: {
					ENVIRONMENT: "test",
					JWT_HS256_SECRET: "test-secret-test-secret-test-secret-0123456789",
					// 32 bytes, base64: the test key that seals webhook secrets at rest.
					ENCRYPTION_KEY: "dGVzdC1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcy0hISE",
					JWKS_URL: "https://idp.test/.well-known/jwks.json",
					AUTH_FAILURE_WINDOW_S: "0.2",
					FORWARD_RETRY_SCALE: "0",
					TEST_MIGRATIONS: await readD1Migrations("./migrations"),
					// The fuzz test's run count and seed (test/integration/fuzz.test.ts); empty = its defaults.
					FUZZ_RUNS: process.env.FUZZ_RUNS ?? "",
					FUZZ_SEED: process.env.FUZZ_SEED ?? "",
				},
			},
		}),
	],
	test: {
		include: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts"],
		setupFiles: ["./test/helpers/apply-migrations.ts"],
		testTimeout: 20_000,
		silent: "passed-only",
	},
}));
