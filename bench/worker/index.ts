/**
 * What the benchmarks' Worker (workers/bench.ts) adds to the gateway: the pass-through route, the webhook
 * storage floor and the rows meter. Nothing in src/, durable-objects/ or workers/gateway.ts imports this
 * folder, so none of it reaches the deployed bundle (scripts/bundle-size.mjs checks).
 */
export { meterD1, type RowsCounter } from "./d1-meter";
export { benchFloor } from "./floor";
export { benchPassthrough, benchUpstream } from "./passthrough";
export { type BenchEntry, type BenchRows, benchRows } from "./rows";
