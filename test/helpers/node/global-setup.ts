/** Vitest global setup for the e2e run: bundle the Worker once, before any test file starts a gateway. */
import { buildWorker } from "./gateway.ts";

export default async function setup(): Promise<void> {
	await buildWorker();
}
