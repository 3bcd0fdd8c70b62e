/** The events backbone: one envelope, publishing onto the EVENTS queue, the consumer that fans events out to handlers, and the dead-letter queue's consumer. */
export {
	type ConsumerOptions,
	HANDLER_TIMEOUT_MS,
	handleEventBatch,
	isDeadLetterQueue,
	type MessageOutcome,
	registerHandlers,
} from "./consumer";
export { handleDeadLetterBatch, INVALID_EVENT_TYPE, recordDeadLetter } from "./dead-letters";
export { EVENT_VERSION, type EventEnvelope, EventEnvelopeSchema, newEvent } from "./envelope";
export type { EventHandler } from "./handler";
export { MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, publish } from "./publish";
export { EVENT_RETRY, type RetryPolicy, retryDelaySeconds } from "./retry";
