export { BreakerClient, type BreakerClientOptions, type BreakerStub, breakerClientFor } from "./client";
export {
	type AdmitRequest,
	AdmitRequestSchema,
	type AdmitResult,
	BREAKER_STATES,
	type BreakerDecision,
	type BreakerOutcome,
	type BreakerPolicy,
	type BreakerPolicyInput,
	BreakerPolicySchema,
	type BreakerSnapshot,
	type BreakerStateName,
	type BreakerSubject,
	type Breakers,
	breakerName,
	circuitBreakerFor,
	DEFAULT_BREAKER_POLICY,
	noopBreakers,
	parseBreakerName,
	type RecordRequest,
	RecordRequestSchema,
	type RecordResult,
	type TransitionReason,
} from "./interface";
export {
	BreakerMachine,
	type BreakerRow,
	type BreakerStore,
	type MachineSnapshot,
	type ProbeSlot,
	type Transition,
	WINDOW_BUCKETS,
	type WindowBucket,
} from "./machine";
export { breakerRegistry } from "./registry";
export { breakerRoutes } from "./routes";
export { transitionEvent } from "./transition-event";
