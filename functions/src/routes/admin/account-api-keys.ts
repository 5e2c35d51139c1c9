/** POST and GET /v1/admin/accounts/{id}/api-keys: issue a scoped key (secret shown once), list keys. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { getAccount, issueApiKey, listApiKeys } from "../../services/accounts.ts";
import { ApiKeyInfo, ApiKeyWithSecret, apiKeyView, Scope } from "../account/common.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { OPERATOR_ERRORS } from "./accounts.ts";
import { requireOperatorKey } from "./common.ts";

const AccountParam = z.object({
  id: z
    .string()
    .regex(/^acct_[A-Za-z0-9_]{1,64}$/, "must be an account id (acct_...)")
    .openapi({ param: { name: "id", in: "path" }, example: "acct_0a1b2c3d4e5f6a7b" }),
});

const IssueBody = z
  .object({
    scopes: z
      .array(Scope)
      .min(1)
      .max(4)
      .refine((s) => new Set(s).size === s.length, "must not repeat a scope")
      .openapi({ uniqueItems: true }),
  })
  .strict()
  .openapi("ApiKeyIssue");

const NOT_FOUND = { 404: errorResponse("No such account") } as const;

const issue = createRoute({
  method: "post",
  path: "/v1/admin/accounts/{id}/api-keys",
  summary: "Issue an API key with scopes; the psx_ secret is shown only in this response",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: {
    params: AccountParam,
    body: { required: true, content: { "application/json": { schema: IssueBody } } },
  },
  responses: {
    201: { description: "Issued", content: { "application/json": { schema: ApiKeyWithSecret } } },
    ...OPERATOR_ERRORS,
    ...NOT_FOUND,
  },
});

const list = createRoute({
  method: "get",
  path: "/v1/admin/accounts/{id}/api-keys",
  summary: "An account's API keys, oldest first, revoked ones included; never a secret",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: { params: AccountParam },
  responses: {
    200: {
      description: "The keys",
      content: {
        "application/json": { schema: z.object({ keys: z.array(ApiKeyInfo) }).openapi("ApiKeyList") },
      },
    },
    ...OPERATOR_ERRORS,
    ...NOT_FOUND,
  },
});

const noAccount = (id: string) => new ApiError("E_NOT_FOUND", `no account ${id}`);

export function registerAdminAccountApiKeys(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  app.use("/v1/admin/accounts/*", async (c, next) => {
    await requireOperatorKey(c, "accounts and keys");
    await next();
  });

  app.openapi(issue, async (c) => {
    const { id } = c.req.valid("param");
    const deps = c.get("deps");
    const issued = await issueApiKey({
      deps,
      input: { actor: callerOf(c).accountId, accountId: id, scopes: c.req.valid("json").scopes },
    });
    if (!issued) throw noAccount(id);
    c.header("Cache-Control", "no-store");
    return c.json({ ...apiKeyView(issued.key, deps.now()), apiKey: issued.apiKey }, 201);
  });

  app.openapi(list, async (c) => {
    const { id } = c.req.valid("param");
    const deps = c.get("deps");
    if (!(await getAccount(deps.db, id))) throw noAccount(id);
    const keys = await listApiKeys(deps.db, id);
    c.header("Cache-Control", "no-store");
    return c.json({ keys: keys.map((k) => apiKeyView(k, deps.now())) }, 200);
  });
}
