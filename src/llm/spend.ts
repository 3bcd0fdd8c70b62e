/**
 * What a request may spend and what it spent: the caller's monthly budget, reserved before any call
 * (at the most the request can cost) and settled after the answer (with what it did cost). The one
 * module of the plane that talks to the budget.
 */
import type { LlmBudget } from "../config";
import { ApiError, waitUntil } from "../http";
import { type BudgetReservation, budgetsFor } from "./budget";
import { costMicroUsd, priceOf, type Target } from "./config";
import { afterResponse, type Plane } from "./plane";

/** A budget held for one request until it settles. */
export type Reservation = BudgetReservation;

/** The caller's monthly budget: the tenant's override, field by field, over the tier's. */
function budgetOf(plane: Plane): LlmBudget {
	const own = plane.principal.tenantLimits?.llmBudget;
	const tier = plane.tier.llm.budget;
	return {
		monthlyTokens: own?.monthlyTokens !== undefined ? own.monthlyTokens : tier.monthlyTokens,
		monthlyMicroUsd: own?.monthlyMicroUsd !== undefined ? own.monthlyMicroUsd : tier.monthlyMicroUsd,
	};
}

/**
 * Reserves the most this request can cost (its prompt estimate plus its output cap, at the priciest
 * target's price) before any call. null when the caller has no budget. Throws 429 / 503.
 */
export async function reserveBudget(
	plane: Plane,
	targets: readonly Target[],
	promptTokens: number,
	outputTokens: number,
): Promise<Reservation | null> {
	const budget = budgetOf(plane);
	if (budget.monthlyTokens === null && budget.monthlyMicroUsd === null) return null;
	const microUsd = Math.max(
		0,
		...targets.map((t) => costMicroUsd(priceOf(plane.cfg, t.provider, t.model), promptTokens, outputTokens)),
	);
	const { c } = plane;
	const answer = await budgetsFor(c.env).reserve(
		plane.principal.tenantId,
		budget,
		{ tokens: promptTokens + outputTokens, microUsd },
		(p) => waitUntil(c, p),
	);
	if (answer.ok) return answer.reservation;
	if (answer.limitedBy === "unavailable") {
		throw new ApiError("limiter-unavailable", "The budget could not be checked; retry shortly.", {
			reason: answer.reason,
		});
	}
	throw new ApiError(
		"budget-exceeded",
		answer.limitedBy === "tokens"
			? "This request would exceed your monthly token budget."
			: "This request would exceed your monthly spending budget.",
		{ headers: { "retry-after": String(Math.max(1, Math.ceil(answer.retryAfterMs / 1000))) } },
	);
}

/** Settles a reservation with what was spent, after the response. */
export function settleBudget(
	plane: Plane,
	reservation: Reservation,
	spent: { tokens: number; microUsd: number },
): void {
	afterResponse(plane, () => budgetsFor(plane.c.env).settle(reservation, spent));
}
