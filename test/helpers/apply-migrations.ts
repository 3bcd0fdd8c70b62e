import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";

// Storage is per test file: every file starts from freshly migrated, empty tables.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
