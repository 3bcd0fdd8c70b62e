// @ts-check
/**
 * CPU profiles of workerd's isolates for bench/profile.mjs: a minimal Chrome DevTools Protocol client for workerd's
 * V8 inspector, a source-map reader (base64 VLQ, no dependency), and the aggregation of a `.cpuprofile` into self and
 * inclusive time per function, per original source file and per bucket (package, src/ capability, V8's own states).
 */
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, relative, resolve } from "node:path";

// ---------------------------------------------------------------- the inspector (CDP over WebSocket)

/** One target of workerd's inspector (`GET /json/list`): one per Worker (one V8 isolate each). */
/** @typedef {{ id: string; title: string; webSocketDebuggerUrl: string }} InspectorTarget */

/**
 * The inspector's targets, polled until it answers or `timeoutMs` passes (then throws).
 * @param {number} port @param {number} timeoutMs
 * @returns {Promise<InspectorTarget[]>}
 */
export async function inspectorTargets(port, timeoutMs) {
	const deadline = Date.now() + timeoutMs;
	let last = "";
	while (Date.now() < deadline) {
		try {
			const res = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(2000) });
			if (res.ok) {
				const list = /** @type {InspectorTarget[]} */ (await res.json());
				if (Array.isArray(list) && list.length > 0) return list;
				last = "an empty target list";
			} else last = `HTTP ${res.status}`;
		} catch (err) {
			last = String(err instanceof Error ? (err.cause ?? err.message) : err);
		}
		await new Promise((r) => setTimeout(r, 250));
	}
	throw new Error(`workerd's inspector on 127.0.0.1:${port} could not be reached in ${timeoutMs} ms (${last})`);
}

/**
 * A Chrome DevTools Protocol session over one WebSocket: `send(method, params)` resolves with the result of that
 * command or rejects on a protocol error, on the socket closing, or after `timeoutMs`.
 * @param {string} url @param {number} timeoutMs bound on opening and on each command
 */
export async function cdpSession(url, timeoutMs) {
	const ws = new WebSocket(url);
	await new Promise((resolveOpen, rejectOpen) => {
		const timer = setTimeout(() => {
			ws.close();
			rejectOpen(new Error(`the inspector socket ${url} did not open in ${timeoutMs} ms`));
		}, timeoutMs);
		ws.addEventListener("open", () => {
			clearTimeout(timer);
			resolveOpen(undefined);
		});
		ws.addEventListener("error", () => {
			clearTimeout(timer);
			rejectOpen(new Error(`the inspector socket ${url} failed to open`));
		});
	});
	let nextId = 1;
	/** @type {Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>} */
	const pending = new Map();
	const failAll = (/** @type {string} */ why) => {
		for (const [id, p] of pending) {
			clearTimeout(p.timer);
			p.reject(new Error(why));
			pending.delete(id);
		}
	};
	ws.addEventListener("message", (event) => {
		/** @type {{ id?: number; result?: unknown; error?: { message: string } }} */
		const msg = JSON.parse(String(event.data));
		if (msg.id === undefined) return;
		const p = pending.get(msg.id);
		if (!p) return;
		pending.delete(msg.id);
		clearTimeout(p.timer);
		if (msg.error) p.reject(new Error(`inspector: ${msg.error.message}`));
		else p.resolve(msg.result);
	});
	ws.addEventListener("close", () => failAll(`the inspector socket ${url} closed`));
	return {
		/** @param {string} method @param {Record<string, unknown>} [params] @returns {Promise<any>} */
		send(method, params = {}) {
			const id = nextId++;
			return new Promise((res, rej) => {
				const timer = setTimeout(() => {
					pending.delete(id);
					rej(new Error(`inspector: ${method} got no answer in ${timeoutMs} ms`));
				}, timeoutMs);
				pending.set(id, { resolve: res, reject: rej, timer });
				ws.send(JSON.stringify({ id, method, params }));
			});
		},
		close() {
			failAll("closed");
			ws.close();
		},
	};
}

// ---------------------------------------------------------------- source maps

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DIGIT = new Int8Array(128).fill(-1);
for (let i = 0; i < BASE64.length; i++) DIGIT[BASE64.charCodeAt(i)] = i;

/**
 * A source map (v3) decoded for look-ups: per generated line, segments of five numbers (generated column, source,
 * original line, original column, name; -1 where absent), in column order.
 */
export class SourceMap {
	/** @param {string} mapPath the `.map` file; its sources are resolved against its sourceRoot and its directory */
	constructor(mapPath) {
		/** @type {{ sources: string[]; sourceRoot?: string; names: string[]; mappings: string; sourcesContent?: (string | null)[] }} */
		const map = JSON.parse(readFileSync(mapPath, "utf8"));
		const base = map.sourceRoot ? resolve(dirname(mapPath), map.sourceRoot) : dirname(mapPath);
		/** Absolute paths of the sources. */
		this.sources = map.sources.map((s) => (isAbsolute(s) ? s : resolve(base, s)));
		this.names = map.names;
		/** @type {string[][]} original source lines, split on demand */
		this.lines = [];
		this.content = map.sourcesContent ?? [];
		/** @type {Int32Array[]} */
		this.segments = decodeMappings(map.mappings);
	}

	/**
	 * The original position of a generated one (0-based line and column), from the last segment at or before it on
	 * its line; `name` is that segment's name or the nearest named segment at most 64 columns before it.
	 * @param {number} line @param {number} column
	 * @returns {{ source: string; line: number; column: number; name: string | undefined } | undefined}
	 */
	lookup(line, column) {
		const segs = this.segments[line];
		if (!segs || segs.length === 0) return undefined;
		let lo = 0;
		let hi = segs.length / 5 - 1;
		let found = -1;
		while (lo <= hi) {
			const mid = (lo + hi) >> 1;
			if (/** @type {number} */ (segs[mid * 5]) <= column) {
				found = mid;
				lo = mid + 1;
			} else hi = mid - 1;
		}
		if (found < 0 || /** @type {number} */ (segs[found * 5 + 1]) < 0) return undefined;
		let name;
		for (let k = found; k >= 0 && k >= found - 4; k--) {
			if (/** @type {number} */ (segs[k * 5]) < column - 64) break;
			const n = /** @type {number} */ (segs[k * 5 + 4]);
			if (n >= 0) {
				name = this.names[n];
				break;
			}
		}
		return {
			source: /** @type {string} */ (this.sources[/** @type {number} */ (segs[found * 5 + 1])]),
			line: /** @type {number} */ (segs[found * 5 + 2]),
			column: /** @type {number} */ (segs[found * 5 + 3]),
			name,
		};
	}

	/** A line (0-based) of an original source, from the map's sourcesContent. @param {string} source @param {number} line */
	sourceLine(source, line) {
		const i = this.sources.indexOf(source);
		if (i < 0) return undefined;
		if (!this.lines[i]) this.lines[i] = (this.content[i] ?? "").split("\n");
		return this.lines[i]?.[line];
	}
}

/** @param {string} mappings @returns {Int32Array[]} */
function decodeMappings(mappings) {
	/** @type {Int32Array[]} */
	const lines = [];
	let source = 0;
	let origLine = 0;
	let origCol = 0;
	let name = 0;
	let pos = 0;
	const vlq = () => {
		let result = 0;
		let shift = 0;
		for (;;) {
			const digit = DIGIT[mappings.charCodeAt(pos++)] ?? -1;
			if (digit < 0) throw new Error(`bad source map: unexpected character at ${pos - 1}`);
			result += (digit & 31) << shift;
			if ((digit & 32) === 0) break;
			shift += 5;
		}
		return result & 1 ? -(result >>> 1) : result >>> 1;
	};
	const n = mappings.length;
	while (pos <= n) {
		/** @type {number[]} */
		const segs = [];
		let genCol = 0;
		while (pos < n && mappings[pos] !== ";") {
			if (mappings[pos] === ",") {
				pos++;
				continue;
			}
			genCol += vlq();
			let src = -1;
			let line = -1;
			let col = -1;
			let nm = -1;
			if (pos < n && mappings[pos] !== "," && mappings[pos] !== ";") {
				source += vlq();
				origLine += vlq();
				origCol += vlq();
				src = source;
				line = origLine;
				col = origCol;
				if (pos < n && mappings[pos] !== "," && mappings[pos] !== ";") {
					name += vlq();
					nm = name;
				}
			}
			segs.push(genCol, src, line, col, nm);
		}
		lines.push(Int32Array.from(segs));
		pos++;
	}
	return lines;
}

// ---------------------------------------------------------------- function names

const IDENT = /^[A-Za-z_$#][\w$]*/;
const NOT_NAMES = new Set(["function", "if", "for", "while", "switch", "catch", "return", "await", "new", "typeof"]);

/**
 * The name of the function that starts at `column` of line `index` of an original source, read from the text: a
 * declaration or expression (`function name(`), a method (`name(`, `async name(`, `get name(`), or an arrow function,
 * named by what it is assigned to (`name = (…) =>`, `name: (…) =>`: `name → arrow`), the call it is passed to
 * (`name(…, (…) =>`: `name(…) → arrow`), or else the function around it (`arrow in name`, found by indentation).
 * Undefined when the text says nothing.
 * @param {(index: number) => string | undefined} lineAt @param {number} index @param {number} column
 */
export function nameAt(lineAt, index, column) {
	const line = lineAt(index);
	if (line === undefined) return undefined;
	const at = line.slice(column);
	const fn = /^(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)/.exec(at);
	if (fn) return fn[1];
	const method = /^(?:(?:async|static|get|set)\s+)*\*?\s*([A-Za-z_$#][\w$]*)\s*(?:<[^()]*>)?\(/.exec(at);
	if (method?.[1] && !NOT_NAMES.has(method[1]) && !/^(?:async|static|get|set)$/.test(method[1])) {
		const accessor = /^(get|set)\s/.exec(at);
		return accessor ? `${accessor[1]} ${method[1]}` : method[1];
	}
	let before = line.slice(0, column).trimEnd();
	// An arrow function's position can be its first parameter, inside the parenthesis.
	const inParams = before.endsWith("(") && /^[^()]*\)\s*(?::\s*[^=]+)?=>/.test(at);
	if (inParams)
		before = before
			.slice(0, -1)
			.trimEnd()
			.replace(/async$/, "")
			.trimEnd();
	const arrow = inParams || /^(?:async\s*)?(?:<[^()]*>\s*)?(?:\(|[A-Za-z_$][\w$]*\s*=>)/.test(at);
	if (arrow || /^async\s+function\s*\(|^function\s*\(/.test(at)) {
		const assigned = /([A-Za-z_$#][\w$]*)\s*(?::\s*[^=:(]*)?(?:=|:|\?\?|\|\|)\s*\(?\s*$/.exec(before);
		if (assigned?.[1] && !NOT_NAMES.has(assigned[1])) return `${assigned[1]} → arrow`;
		const curried = /([A-Za-z_$#][\w$]*)\s*=\s*(?:async\s*)?\([^()]*\)\s*=>\s*(?:async\s*)?$/.exec(before);
		if (curried?.[1]) return `${curried[1]} → arrow`;
		const passed = /([A-Za-z_$][\w$]*)\s*(?:<[^()]*>)?\s*\((?:[^()]|\([^()]*\))*$/.exec(before);
		if (passed?.[1] && !NOT_NAMES.has(passed[1])) return `${passed[1]}(…) → arrow`;
		const indent = /^\s*/.exec(line)?.[0].length ?? 0;
		for (let i = index - 1; i >= 0 && i >= index - 200; i--) {
			const above = lineAt(i);
			if (above === undefined || above.trim() === "") continue;
			const depth = /^\s*/.exec(above)?.[0].length ?? 0;
			if (depth >= indent) continue;
			const outer =
				/(?:function\s*\*?\s*([A-Za-z_$][\w$]*))|(?:^\s*(?:(?:export|async|static|public|private|get|set)\s+)*([A-Za-z_$#][\w$]*)\s*(?:<[^()]*>)?\()|(?:(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=)/.exec(
					above,
				);
			const name = outer?.[1] ?? outer?.[2] ?? outer?.[3];
			if (name && !NOT_NAMES.has(name)) return `arrow in ${name}`;
			if (depth === 0) break;
		}
		return "(arrow)";
	}
	const ident = IDENT.exec(at);
	return ident && !NOT_NAMES.has(ident[0]) ? ident[0] : undefined;
}

// ---------------------------------------------------------------- profiles

/**
 * The part of a `.cpuprofile` (CDP `Profiler.Profile`) read here.
 * @typedef {{ id: number; callFrame: { functionName: string; scriptId: string; url: string; lineNumber: number;
 *   columnNumber: number }; children?: number[] }} ProfileNode
 * @typedef {{ nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }} Profile
 */

/** V8's own pseudo-frames. */
const SPECIAL = new Set(["(root)", "(program)", "(idle)", "(garbage collector)"]);

/** Whether a mapped file is the project's own code (not a package, not the runtime). @param {string} file */
export const isProjectFile = (file) => /^(src|durable-objects|workers|bench)\//.test(file);

/**
 * A mapped source path as it is in the repository. drizzle-orm's published source maps name their sources one folder
 * too high (`node_modules/drizzle-orm/d1/session.js.map` → `../../src/d1/session.ts`), so the bundle's map puts them
 * under `node_modules/src/`: they are drizzle-orm's.
 * @param {string} path
 */
export const sourceFile = (path) => path.replace(/^node_modules\/src\//, "node_modules/drizzle-orm/src/");

/**
 * Where a mapped source path belongs: `node_modules/<package>`, `src/<capability>` (and `src/<capability>/<dir>` for
 * nested folders), or the top-level folder (durable-objects, workers, bench/worker).
 * @param {string} path relative to the repository root, `/`-separated
 */
export function bucketOf(path) {
	const parts = path.split("/");
	if (parts[0] === "node_modules") {
		const scoped = parts[1]?.startsWith("@");
		return parts.slice(0, scoped ? 3 : 2).join("/");
	}
	if (parts[0] === "src")
		return parts.length > 3 ? parts.slice(0, 3).join("/") : parts.length === 3 ? parts.slice(0, 2).join("/") : path;
	if (parts[0] === "bench") return parts.slice(0, 2).join("/");
	return parts[0] ?? path;
}

/**
 * The sampling period of a profile as it ran: the median gap between consecutive samples, counting only gaps of at
 * most three times the requested interval (longer gaps are times the isolate was not running at all). Under load
 * the sampler thread often runs late, so this is longer than the interval asked for.
 * @param {Profile} profile @param {number} requestedUs
 */
export function effectivePeriod(profile, requestedUs) {
	const gaps = profile.timeDeltas.slice(1).filter((d) => d > 0 && d <= 3 * requestedUs);
	if (gaps.length < 20) return requestedUs;
	gaps.sort((a, b) => a - b);
	return Math.max(requestedUs, /** @type {number} */ (gaps[gaps.length >> 1]));
}

/**
 * @typedef {{ key: string; name: string; file: string; line: number; bucket: string; selfUs: number; totalUs: number }} FunctionRow
 * @typedef {{ name: string; selfUs: number; totalUs: number }} Row
 * @typedef {{ target: string; wallUs: number; samples: number; requestedUs: number; periodUs: number;
 *   specialUs: Record<string, number>; jsUs: number; sampledUs: number; upperUs: number; functions: FunctionRow[]; files: Row[];
 *   buckets: Row[]; origins: Row[]; nativeCallers: Row[]; packageCallers: Row[] }} Analysis
 */

/**
 * Self and inclusive time per function, original source file and bucket, from one isolate's profile.
 *
 * workerd takes an isolate's lock to run it, and V8 drops the samples taken while its lock is not held, so a profile
 * is a series of runs of samples with gaps between them (the isolate waiting, or workerd's thread busy elsewhere):
 * each sample counts as one sampling period (`effectivePeriod`), not as the gap to the next sample as DevTools counts
 * it. The sum is the time the isolate was running (JS, GC, and `(program)`: V8 neither in JS nor idle, i.e. workerd's
 * C++ with the lock held), at the sampler's resolution.
 *
 * A frame in the bundle (`bundleUrl`) is mapped through `map` and named from the original source text (`nameAt`);
 * a frame without a URL is a native function (a workerd API implemented in C++, such as fetch or console.log, or a
 * V8 builtin that shows as a frame) and counts as `native`; any other URL is workerd's own JavaScript. Inclusive time
 * counts each function, file or bucket once per sample however often it recurs in the stack. `nativeCallers` is the
 * self time of native frames and workerd's JavaScript by the nearest project function (src/, durable-objects/,
 * workers/, bench/) or package below them on the stack; `packageCallers` the self time of packages (node_modules/)
 * by the nearest project function below them. `origins` sorts each sample by what its stack contains: a
 * frame of durable-objects/ (a Durable Object's method), of the queue consumer (src/events/consumer.ts,
 * dead-letters.ts), or neither (a request's handling, its continuations after an await, background work run by
 * waitUntil); a continuation's stack starts where it resumed, so the first two are lower bounds.
 * @param {Profile} profile
 * @param {{ target: string; requestedUs: number; bundleUrl: (url: string) => boolean; map: SourceMap | undefined;
 *   bundleText?: string[]; root: string }} options
 * @returns {Analysis}
 */
export function analyse(profile, { target, requestedUs, bundleUrl, map, bundleText, root }) {
	/** @type {Map<number, ProfileNode>} */
	const byId = new Map(profile.nodes.map((n) => [n.id, n]));
	/** @type {Map<number, number>} */
	const parent = new Map();
	for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

	/** @type {Map<string, { name: string; file: string; line: number; bucket: string }>} */
	const frames = new Map();
	/** @param {ProfileNode} node */
	const frameOf = (node) => {
		const cf = node.callFrame;
		const raw = `${cf.url}|${cf.lineNumber}|${cf.columnNumber}|${cf.functionName}`;
		let f = frames.get(raw);
		if (f) return f;
		if (cf.url === "" && SPECIAL.has(cf.functionName)) {
			f = { name: cf.functionName, file: cf.functionName, line: 0, bucket: cf.functionName };
		} else if (cf.url === "") {
			f = { name: `${cf.functionName || "(anonymous)"} [native]`, file: "(native)", line: 0, bucket: "native" };
		} else if (bundleUrl(cf.url)) {
			const pos = map?.lookup(cf.lineNumber, cf.columnNumber);
			if (pos) {
				const file = sourceFile(relative(root, pos.source).split("\\").join("/"));
				const fromText = map ? nameAt((i) => map.sourceLine(pos.source, i), pos.line, pos.column) : undefined;
				// V8's name is the minified one for functions, the real one for methods (property names stay).
				const v8 = cf.functionName && (cf.functionName.length > 3 || /\s/.test(cf.functionName)) ? cf.functionName : "";
				const mapped = pos.name && pos.name !== "__name" ? pos.name : "";
				f = {
					name: /^[gs]et /.test(v8) ? v8 : (fromText ?? (v8 || mapped || "(anonymous)")),
					file,
					line: pos.line + 1,
					bucket: bucketOf(file),
				};
			} else {
				const code = bundleText?.[cf.lineNumber]?.slice(cf.columnNumber, cf.columnNumber + 60) ?? "";
				const helper = /"name",\{value:/.test(code) ? "__name (esbuild keepNames helper)" : "";
				f = {
					name: helper || `${cf.functionName || "(anonymous)"}: ${code.slice(0, 30)}`,
					file: "(bundle, unmapped)",
					line: cf.lineNumber + 1,
					bucket: "(bundle, unmapped)",
				};
			}
		} else {
			f = {
				name: cf.functionName || "(anonymous)",
				file: cf.url,
				line: cf.lineNumber + 1,
				bucket: "workerd built-in JS",
			};
		}
		frames.set(raw, f);
		return f;
	};

	const periodUs = effectivePeriod(profile, requestedUs);
	/** @type {Map<number, number>} */
	const selfByNode = new Map();
	for (const id of profile.samples) selfByNode.set(id, (selfByNode.get(id) ?? 0) + periodUs);

	/** @type {Map<string, FunctionRow>} */
	const functions = new Map();
	/** @type {Map<string, Row>} */
	const files = new Map();
	/** @type {Map<string, Row>} */
	const buckets = new Map();
	/** @type {Map<string, Row>} */
	const origins = new Map();
	/** @type {Map<string, Row>} */
	const nativeCallers = new Map();
	/** @type {Map<string, Row>} */
	const packageCallers = new Map();
	/** @param {Map<string, Row>} m @param {string} name */
	const row = (m, name) => {
		let r = m.get(name);
		if (!r) {
			r = { name, selfUs: 0, totalUs: 0 };
			m.set(name, r);
		}
		return r;
	};
	/** @type {Record<string, number>} */
	const specialUs = { "(idle)": 0, "(program)": 0, "(garbage collector)": 0, "(root)": 0 };
	const where = (/** @type {{ name: string; file: string; line: number }} */ f) =>
		`${f.name} (${f.file}${f.line ? `:${f.line}` : ""})`;
	for (const [id, us] of selfByNode) {
		const top = frameOf(/** @type {ProfileNode} */ (byId.get(id)));
		if (top.bucket in specialUs) {
			specialUs[top.bucket] = (specialUs[top.bucket] ?? 0) + us;
			row(buckets, top.bucket).selfUs += us;
			row(buckets, top.bucket).totalUs += us;
			continue;
		}
		/** @type {Set<string>} */
		const seenF = new Set();
		/** @type {Set<string>} */
		const seenFile = new Set();
		/** @type {Set<string>} */
		const seenBucket = new Set();
		let origin = "request handling, continuations, waitUntil work";
		const runtimeTop = top.bucket === "native" || top.bucket === "workerd built-in JS";
		const packageTop = top.file.startsWith("node_modules/");
		let caller = "";
		let projectCaller = "";
		/** The nearest frame of another bucket, for a package called with no project frame below it. */
		let otherCaller = "";
		for (let cur = /** @type {number | undefined} */ (id); cur !== undefined; cur = parent.get(cur)) {
			const f = frameOf(/** @type {ProfileNode} */ (byId.get(cur)));
			if (f.bucket === "(root)") continue;
			const k = `${f.name}\u0000${f.file}:${f.line}`;
			let fr = functions.get(k);
			if (!fr) {
				fr = { key: k, name: f.name, file: f.file, line: f.line, bucket: f.bucket, selfUs: 0, totalUs: 0 };
				functions.set(k, fr);
			}
			if (cur === id) {
				fr.selfUs += us;
				row(files, f.file).selfUs += us;
				row(buckets, f.bucket).selfUs += us;
			}
			if (!seenF.has(k)) {
				seenF.add(k);
				fr.totalUs += us;
			}
			if (!seenFile.has(f.file)) {
				seenFile.add(f.file);
				row(files, f.file).totalUs += us;
			}
			if (!seenBucket.has(f.bucket)) {
				seenBucket.add(f.bucket);
				row(buckets, f.bucket).totalUs += us;
			}
			if (runtimeTop && !caller && (isProjectFile(f.file) || f.file.startsWith("node_modules/"))) caller = where(f);
			if (packageTop && !projectCaller && isProjectFile(f.file)) projectCaller = where(f);
			if (packageTop && !otherCaller && f.bucket !== top.bucket && f.bucket !== "(root)") otherCaller = f.bucket;
			if (f.file.startsWith("durable-objects/")) origin = "Durable Objects (a durable-objects/ frame on the stack)";
			else if (
				(f.file === "src/events/consumer.ts" || f.file === "src/events/dead-letters.ts") &&
				!origin.startsWith("Durable")
			)
				origin = "queue consumer (src/events/consumer.ts on the stack)";
		}
		row(origins, origin).selfUs += us;
		row(origins, origin).totalUs += us;
		if (runtimeTop) {
			const r = row(
				nativeCallers,
				`${top.name}${top.bucket === "native" ? "" : ` (${top.file})`} ← ${caller || "(no project frame)"}`,
			);
			r.selfUs += us;
			r.totalUs += us;
		}
		if (packageTop) {
			const r = row(
				packageCallers,
				`${top.bucket} ← ${projectCaller || `${otherCaller || "(nothing)"} (no project frame on the stack)`}`,
			);
			r.selfUs += us;
			r.totalUs += us;
		}
	}
	const wallUs = profile.endTime - profile.startTime;
	const sampledUs = profile.samples.length * periodUs - (specialUs["(idle)"] ?? 0);
	// The same, counting each sample as the gap to the next one up to five times the asked interval: the sampler
	// thread, starved on a busy machine, may have skipped samples of a running isolate. An upper estimate.
	let upperUs = 0;
	for (let i = 0; i < profile.samples.length; i++) {
		const node = /** @type {ProfileNode} */ (byId.get(/** @type {number} */ (profile.samples[i])));
		if (node.callFrame.functionName === "(idle)" && node.callFrame.url === "") continue;
		upperUs += Math.min(Math.max(0, profile.timeDeltas[i + 1] ?? periodUs), 5 * requestedUs);
	}
	const jsUs =
		sampledUs - (specialUs["(program)"] ?? 0) - (specialUs["(garbage collector)"] ?? 0) - (specialUs["(root)"] ?? 0);
	const bySelf = (/** @type {Row} */ a, /** @type {Row} */ b) => b.selfUs - a.selfUs || b.totalUs - a.totalUs;
	return {
		target,
		wallUs,
		samples: profile.samples.length,
		requestedUs,
		periodUs,
		specialUs,
		jsUs,
		sampledUs,
		upperUs,
		functions: [...functions.values()].sort(bySelf),
		files: [...files.values()].sort(bySelf),
		buckets: [...buckets.values()].sort(bySelf),
		origins: [...origins.values()].sort(bySelf),
		nativeCallers: [...nativeCallers.values()].sort(bySelf),
		packageCallers: [...packageCallers.values()].sort(bySelf),
	};
}
