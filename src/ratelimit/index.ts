export { type AdmitOptions, admit, bucketPolicy, leaseClientFor } from "./admit";
export { type LimitView, limitField, policyField } from "./headers";
export {
	type AcquireRequest,
	AcquireRequestSchema,
	type Admission,
	type Allowed,
	type BucketPolicy,
	BucketPolicySchema,
	type Decision,
	type Denied,
	type Grant,
	type LeaseReturn,
	LeaseReturnSchema,
	type LimiterState,
	noopAdmission,
	rateLimiterName,
	type Unavailable,
} from "./interface";
export { LeaseClient, type LeaseClientOptions, type LimiterStub } from "./lease-client";
