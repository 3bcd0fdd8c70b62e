export { type AdmitOptions, admit, bucketPolicy, leaseClientFor } from "./admit";
export { type LimitView, limitField, policyField } from "./headers";
export type { Admission, Allowed, BucketPolicy, Decision, Denied, Unavailable } from "./interface";
export { noopAdmission } from "./interface";
export { LeaseClient, type LeaseClientOptions, type LimiterStub } from "./lease-client";
