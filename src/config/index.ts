export { type Config, ConfigSchema, config, type Retention, RetentionSchema } from "./env";
export { parseScopes, SCOPES, type Scope, ScopeSchema } from "./scopes";
export {
	type Limits,
	LimitsSchema,
	type LlmBudget,
	LlmBudgetSchema,
	narrowerTier,
	PLANES,
	type Plane,
	RateSchema,
	TIER_NAMES,
	TIERS,
	type TierName,
	TierNameSchema,
	type TierPolicy,
	TierPolicySchema,
	tierPolicy,
} from "./tiers";
