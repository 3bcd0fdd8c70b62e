/**
 * The kernel: small, platform-neutral helpers every capability borrows (encodings, hashes, bounded
 * maps, per-isolate memos, clocks and timeouts, JSON). It imports nothing from src/ and knows nothing
 * of Hono, bindings or tenants.
 */
export { fromBase64, fromBase64Text, fromHex, randomHex, toBase64, toBase64Url, toHex } from "./encoding";
export { errorMessage, errorText, MAX_ERROR_CHARS, truncate } from "./error-text";
export { bytesEqual, sha256Hex, timingSafeEqualStrings } from "./hash";
export { canonicalJson, isRecord } from "./json";
export { exceedsJsonDepth, MAX_JSON_DEPTH } from "./json-depth";
export { Lru, TtlLru } from "./lru";
export { perIsolate } from "./per-isolate";
export { type Clock, orTimeout, sleep, systemClock, TIMED_OUT, untilAborted, within } from "./time";
