/** Admin API route definitions: schemas, and the operator guard of the routes that need it. Handlers are in handlers.ts. */
import { createRoute, z } from "@hono/zod-openapi";
import { requireOperator } from "../auth";
import { LimitsSchema, ScopeSchema, TierNameSchema } from "../config";
import { BEARER, jsonResponse, problems } from "../http";

const TenantId = z
	.string()
	.regex(/^[a-z0-9][a-z0-9-]{1,62}$/, "lowercase letters, digits and '-', 2 to 63 characters")
	.openapi({ example: "acme" });
const KeyId = z.string().regex(/^key_[a-z0-9]{16}$/, "a key id such as key_0123456789abcdef");

export const TenantSchema = z
	.object({
		id: TenantId,
		name: z.string(),
		tier: TierNameSchema,
		status: z.enum(["active", "suspended"]),
		limits: LimitsSchema.nullable(),
		createdAt: z.number().int(),
		updatedAt: z.number().int().nullable(),
	})
	.openapi("Tenant");

export const ApiKeySchema = z
	.object({
		id: KeyId,
		tenantId: TenantId,
		name: z.string(),
		prefix: z.string(),
		scopes: z.array(ScopeSchema),
		tier: TierNameSchema.nullable(),
		limits: LimitsSchema.nullable(),
		expiresAt: z.number().int().nullable(),
		revokedAt: z.number().int().nullable(),
		lastUsedAt: z.number().int().nullable(),
		createdAt: z.number().int(),
	})
	.openapi("ApiKey");

const errors = problems(400, 401, 403, 404, 415, 429);

export const createTenant = createRoute({
	method: "post",
	path: "/tenants",
	summary: "Create a tenant (operator only)",
	security: BEARER,
	// Runs before the request is validated, after the admin group's guards (src/app.ts) set the principal.
	middleware: [requireOperator()],
	request: {
		body: {
			required: true,
			content: {
				"application/json": {
					schema: z
						.object({
							id: TenantId,
							name: z.string().min(1).max(200),
							tier: TierNameSchema,
							limits: LimitsSchema.optional(),
						})
						.strict(),
				},
			},
		},
	},
	responses: { 201: jsonResponse(TenantSchema, "The tenant"), ...errors, ...problems(409) },
});

const TenantParams = z.object({ tenantId: TenantId });

export const getTenant = createRoute({
	method: "get",
	path: "/tenants/{tenantId}",
	summary: "Read a tenant (its own admins, or the operator)",
	security: BEARER,
	request: { params: TenantParams },
	responses: { 200: jsonResponse(TenantSchema, "The tenant"), ...errors },
});

export const updateTenant = createRoute({
	method: "patch",
	path: "/tenants/{tenantId}",
	summary: "Change a tenant's name, tier, status or limits (operator only)",
	security: BEARER,
	middleware: [requireOperator()],
	request: {
		params: TenantParams,
		body: {
			required: true,
			content: {
				"application/json": {
					schema: z
						.object({
							name: z.string().min(1).max(200).optional(),
							tier: TierNameSchema.optional(),
							status: z.enum(["active", "suspended"]).optional(),
							limits: LimitsSchema.nullable().optional(),
						})
						.strict()
						.refine((v) => Object.keys(v).length > 0, "give at least one field to change"),
				},
			},
		},
	},
	responses: { 200: jsonResponse(TenantSchema, "The tenant"), ...errors },
});

export const createKey = createRoute({
	method: "post",
	path: "/tenants/{tenantId}/keys",
	summary: "Create an API key; the secret is in this response only",
	security: BEARER,
	request: {
		params: TenantParams,
		body: {
			required: true,
			content: {
				"application/json": {
					schema: z
						.object({
							name: z.string().min(1).max(200),
							scopes: z.array(ScopeSchema).min(1).max(16),
							tier: TierNameSchema.optional(),
							limits: LimitsSchema.optional(),
							expiresAt: z.number().int().positive().optional(),
						})
						.strict(),
				},
			},
		},
	},
	responses: {
		201: jsonResponse(
			ApiKeySchema.extend({ key: z.string() }).openapi("NewApiKey"),
			"The key, with its secret shown once",
		),
		...errors,
	},
});

export const listKeys = createRoute({
	method: "get",
	path: "/tenants/{tenantId}/keys",
	summary: "List a tenant's API keys (never their secrets)",
	security: BEARER,
	request: { params: TenantParams },
	responses: { 200: jsonResponse(z.object({ keys: z.array(ApiKeySchema) }), "The keys"), ...errors },
});

export const revokeKey = createRoute({
	method: "delete",
	path: "/tenants/{tenantId}/keys/{keyId}",
	summary: "Revoke an API key (takes effect everywhere within seconds)",
	security: BEARER,
	request: { params: TenantParams.extend({ keyId: KeyId }) },
	responses: { 200: jsonResponse(ApiKeySchema, "The revoked key"), ...errors },
});
