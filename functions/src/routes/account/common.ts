/** What the account and admin key routes share: the API key view (never a secret) and auth. */
import { z } from "@hono/zod-openapi";
import { API_KEY_SCOPES } from "../../../../shared/accounts.ts";
import type { ApiKeyRow } from "../../services/accounts.ts";

export const Scope = z.enum(API_KEY_SCOPES).openapi({
  description:
    "`supply`: register devices, earnings; `resell`: pool-keys API; `operate`: human operator; `ops-agent`: AI operator (reads, capped reversible actions, proposals)",
});

export const KeyIdParam = z.object({
  keyId: z
    .string()
    .regex(/^key_[0-9a-f]{16}$/, "must be an API key id (key_...)")
    .openapi({ param: { name: "keyId", in: "path" }, example: "key_0a1b2c3d4e5f6a7b" }),
});

export const ApiKeyInfo = z
  .object({
    keyId: z.string().openapi({ example: "key_0a1b2c3d4e5f6a7b" }),
    accountId: z.string(),
    scopes: z.array(Scope),
    hint: z.string().openapi({ description: "first characters of the secret, to tell keys apart" }),
    status: z.enum(["active", "rotating", "expired", "revoked"]).openapi({
      description: "`rotating`: replaced by `rotatedTo`, still valid until `expiresAt`",
    }),
    createdAt: z.string(),
    revokedAt: z.string().nullable(),
    expiresAt: z.string().nullable(),
    rotatedTo: z.string().nullable(),
  })
  .openapi("ApiKeyInfo");

export const ApiKeyWithSecret = ApiKeyInfo.extend({
  apiKey: z
    .string()
    .openapi({ description: "the `psx_` secret: shown only in this response", example: "psx_..." }),
}).openapi("ApiKeyWithSecret");

const iso = (d: string | Date | null) => (d === null ? null : new Date(d).toISOString());

export function apiKeyView(k: ApiKeyRow, now: Date) {
  const expired = k.expires_at !== null && new Date(k.expires_at).getTime() <= now.getTime();
  const status = k.revoked_at ? "revoked" : expired ? "expired" : k.rotated_to ? "rotating" : "active";
  return {
    keyId: k.id,
    accountId: k.account_id,
    scopes: k.scopes,
    hint: k.hint,
    status: status as "active" | "rotating" | "expired" | "revoked",
    createdAt: iso(k.created_at)!,
    revokedAt: iso(k.revoked_at),
    expiresAt: iso(k.expires_at),
    rotatedTo: k.rotated_to,
  };
}
