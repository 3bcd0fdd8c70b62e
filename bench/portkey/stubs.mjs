// @ts-check
/**
 * What bench/portkey/build.mjs puts in place of Portkey's Node-only packages (ioredis, ws, @hono/node-server,
 * @hono/node-ws) in its Worker build. On workerd none of them is reached: ioredis only when the Node runtime has
 * REDIS_CONNECTION_STRING, the others only in the Node start-up the build cuts off. Each throws if it ever is, so a
 * call would show as a failed request in the benchmark rather than pass unnoticed.
 */

/** @param {string} what */
const unavailable = (what) => {
	throw new Error(`${what} is not available in the benchmark's Worker build of Portkey`);
};

/** `import Redis from "ioredis"`, `import WebSocket from "ws"`. */
export default class NodeOnly {
	constructor() {
		unavailable("a Node-only class (ioredis / ws)");
	}
}

/** `import { serve } from "@hono/node-server"`. */
export const serve = () => unavailable("@hono/node-server serve()");

/** `import { createNodeWebSocket } from "@hono/node-ws"`. */
export const createNodeWebSocket = () => unavailable("@hono/node-ws createNodeWebSocket()");
