declare namespace Cloudflare {
	interface Env {
		TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
		/** Runs and seed of the fuzz test (vitest.config.ts passes FUZZ_RUNS / FUZZ_SEED from the shell). */
		FUZZ_RUNS: string;
		FUZZ_SEED: string;
	}
}
