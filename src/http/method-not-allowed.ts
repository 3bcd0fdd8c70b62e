/** Tells 405 from 404: on a miss, finds the methods the path does accept. */
import type { Hono } from "hono";
import { TrieRouter } from "hono/router/trie-router";

/** Builds a lookup of the methods each registered path accepts. Call after all routes are mounted. */
export function allowedMethods(app: Hono<never>): (path: string) => string[] {
	const router = new TrieRouter<string>();
	for (const route of app.routes) {
		if (route.method !== "ALL") router.add("ALL", route.path, route.method);
	}
	return (path) => {
		const [handlers] = router.match("GET", path);
		const methods = new Set(handlers.map(([method]) => method));
		if (methods.has("GET")) methods.add("HEAD");
		return [...methods].sort();
	};
}
