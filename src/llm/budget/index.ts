export {
	BudgetClient,
	type BudgetClientOptions,
	type BudgetDecision,
	type BudgetReservation,
	type Budgets,
	budgetsFor,
} from "./client";
export {
	type BudgetSettlement,
	type BudgetState,
	type BudgetStub,
	type BudgetTotals,
	DEFAULT_RESERVATION_TTL_MS,
	MAX_RESERVATION_TTL_MS,
	type RenewBudgetInput,
	type RenewBudgetRequest,
	RenewBudgetRequestSchema,
	type RenewBudgetResult,
	type ReserveBudgetRequest,
	ReserveBudgetRequestSchema,
	type ReserveBudgetResult,
	type SettleBudgetRequest,
	SettleBudgetRequestSchema,
} from "./interface";
export { BudgetLedger, type BudgetRow, type BudgetStore, type ReservationRow } from "./ledger";
