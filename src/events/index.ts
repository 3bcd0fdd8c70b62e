export {
	type ConsumerOptions,
	HANDLER_TIMEOUT_MS,
	handleEventBatch,
	isDeadLetterQueue,
	type MessageOutcome,
	registerHandlers,
} from "./consumer";
export { deadLetterRoutes } from "./dead-letter-api";
export {
	handleDeadLetterBatch,
	INVALID_EVENT_TYPE,
	MAX_REPLAY_BATCH,
	type ReplayActor,
	type ReplayResult,
	recordDeadLetter,
	replayDeadLetters,
} from "./dead-letters";
export { EVENT_VERSION, type EventEnvelope, EventEnvelopeSchema, newEvent } from "./envelope";
export type { EventHandler } from "./handler";
export { MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, publish } from "./publish";
export { EVENT_RETRY, type RetryPolicy, retryDelaySeconds } from "./retry";
