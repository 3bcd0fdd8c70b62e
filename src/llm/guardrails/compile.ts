/** Compiling configured checks into detectors, once per configured list per isolate. */
import { perIsolate } from "../../lib";
import { BUILT_INS, type Detector } from "./detectors";
import { patternProblem } from "./pattern-safety";
import type { GuardrailCheck } from "./schema";

export interface CompiledCheck {
	readonly name: string;
	readonly action: "block" | "redact";
	readonly detectors: readonly Detector[];
}

export interface CompiledGuardrails {
	readonly checks: readonly CompiledCheck[];
	/** The smallest `lookBehind` a {@link StreamGuard} over these checks accepts (the built-ins' longest reach, less one). */
	readonly minLookBehind: number;
}

function compileCheck(check: GuardrailCheck): CompiledCheck {
	if (check.kind !== "pattern") return { name: check.kind, action: check.action, detectors: BUILT_INS[check.kind] };
	if (!check.pattern || !check.name) throw new Error("A pattern guardrail needs a pattern and a name");
	const problem = patternProblem(check.pattern);
	if (problem) throw new Error(`Guardrail pattern ${check.name} is refused: ${problem}`);
	return { name: check.name, action: check.action, detectors: [{ re: new RegExp(check.pattern, "g"), reach: null }] };
}

/**
 * Compiles a list of checks (memoised per array: the parsed config keeps its arrays, so each is
 * compiled once per isolate). Throws on a custom pattern that {@link patternProblem} refuses.
 */
export const compileGuardrails: (checks: readonly GuardrailCheck[]) => CompiledGuardrails = perIsolate(
	(checks: readonly GuardrailCheck[]): CompiledGuardrails => {
		const list = checks.map(compileCheck);
		let reach = 2;
		for (const c of list) for (const d of c.detectors) reach = Math.max(reach, d.reach ?? 0);
		return { checks: list, minLookBehind: reach - 1 };
	},
);
