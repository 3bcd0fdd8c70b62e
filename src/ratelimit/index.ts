export {
	type AdmissionHeaders,
	type AdmissionSubject,
	type AdmitOptions,
	type Admitted,
	admit,
	bucketPolicy,
	leaseClientFor,
	takeAdmission,
	webhookSubjects,
} from "./admit";
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
	type LimiterSubject,
	noopAdmission,
	rateLimiterFor,
	rateLimiterName,
	type Unavailable,
} from "./interface";
export { LeaseClient, type LeaseClientOptions, type LimiterStub } from "./lease-client";
export {
	type BucketRow,
	type BucketStore,
	LEASE_EXPIRY_GRACE_MS,
	LeasedBucket,
	type LeaseRow,
	MIN_LEASE_TTL_MS,
} from "./leased-bucket";
export { monthEnd, monthKey } from "./period";
