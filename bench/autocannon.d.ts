// The part of autocannon's programmatic API that bench/lib.mjs uses (autocannon ships no types).
declare module "autocannon" {
	interface Options {
		url: string;
		headers?: Record<string, string>;
		connections?: number;
		pipelining?: number;
		duration?: number;
	}
	interface Histogram {
		average: number;
		p50: number;
		p99: number;
	}
	interface Result {
		duration: number;
		errors: number;
		timeouts: number;
		non2xx: number;
		latency: Histogram;
		requests: Histogram & { total: number };
	}
	interface Instance extends PromiseLike<Result> {
		on(
			event: "response",
			listener: (client: unknown, statusCode: number, resBytes: number, responseTime: number) => void,
		): this;
		stop(): void;
	}
	function autocannon(options: Options): Instance;
	export default autocannon;
}
