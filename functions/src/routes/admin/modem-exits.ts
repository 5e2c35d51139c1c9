/** POST/GET /v1/admin/modem-exits and DELETE /v1/admin/modem-exits/{id}: operators only. */

import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { withTransaction } from "../../../../shared/db/pool.ts";
import { ApiError } from "../../../../shared/errors.ts";
import { sealUpstreamAuth } from "../../../../shared/upstream-auth.ts";
import type { AppEnv } from "../../env.ts";
import {
  accountKindOf,
  findModemExit,
  listModemExits,
  type ModemExitRow,
  registerModemExit,
  removeModemExit,
  syncModemListing,
} from "../../services/modem-exits.ts";
import { callerOf } from "../api-key.ts";

import { ErrorBody, registerResellerAuth } from "../reseller/common.ts";
import { requireOperator } from "./common.ts";

const TAG = "admin";
const SECURITY = [{ ApiKey: [] }];

const ModemExit = z
  .object({
    id: z.string().openapi({ example: "modem_1a2b3c4d5e6f7a8b" }),
    host: z.string(),
    port: z.number().int(),
    country: z.string(),
    carrier: z.string().nullable(),
    city: z.string().nullable(),
    ipType: z.enum(["mobile", "residential", "datacenter"]),
    pool: z.literal("mbl"),
    rotationWebhook: z
      .boolean()
      .openapi({ description: "a rotation URL is configured (the URL itself is not echoed)" }),
    upstreamAuth: z
      .boolean()
      .openapi({ description: "upstream proxy credentials are stored (sealed; never echoed)" }),
    reservedUntil: z
      .string()
      .nullable()
      .optional()
      .openapi({ description: "rented as an x402 dedicated port until then (listing only)" }),
    farmerAccountId: z.string().nullable().openapi({
      description: "the farmer paid for this exit's traffic (mobile-class rate); null = the house's",
    }),
    createdAt: z.string(),
  })
  .openapi("ModemExit");

const NAME = /^[a-z0-9_.]{1,64}$/;
const ModemExitCreate = z
  .object({
    host: z
      .string()
      .regex(
        /^([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}$|^[0-9a-fA-F:]{2,39}$/,
        "must be a hostname or an IP address",
      )
      .openapi({ description: "the modem's upstream HTTP proxy address", example: "10.8.0.12" }),
    port: z.number().int().min(1).max(65_535),
    country: z
      .string()
      .toLowerCase()
      .regex(/^[a-z]{2}$/, "must be an ISO-2 country code"),
    carrier: z.string().toLowerCase().regex(NAME, "must be [a-z0-9_.], no hyphens").optional(),
    city: z.string().toLowerCase().regex(NAME, "must be [a-z0-9_.], no hyphens").optional(),
    ipType: z.enum(["mobile", "residential", "datacenter"]).default("mobile"),
    rotationUrl: z
      .string()
      .max(2000)
      // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters (NUL: Postgres text) are refused
      .regex(/^https?:\/\/[^\s\x00-\x1f\x7f]+$/, "must be an http(s) URL")
      .optional()
      .openapi({
        description:
          "POSTed by the API when the renter of this modem (x402 dedicated port) asks for a new IP; it should make the modem re-dial and answer 2xx. May carry the operator's token; never shown to customers.",
        example: "https://modem-ops.example/rotate/12?token=...",
      }),
    upstreamAuth: z
      .object({
        username: z
          .string()
          .min(1)
          .max(255)
          // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are refused
          .regex(/^[^:\x00-\x1f\x7f]+$/, "must not contain ':' or control characters"),
        password: z
          .string()
          .min(1)
          .max(255)
          // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are refused
          .regex(/^[^\x00-\x1f\x7f]+$/, "must not contain control characters"),
      })
      .nullable()
      .optional()
      .openapi({
        description:
          "the modem proxy's own username/password, sent by gateways and the prober as Proxy-Authorization; stored sealed under MODEM_UPSTREAM_KEY, never echoed. null clears them; omitted keeps what is stored.",
      }),
    farmerAccountId: z
      .string()
      .regex(/^acct_[A-Za-z0-9_]{1,64}$/, "must be an account id (acct_...)")
      .nullable()
      .optional()
      .openapi({
        description:
          "the farmer (a `farmer` or `supplier` account) whose earnings this exit's traffic accrues to, at the mobile-class rate; null makes it the house's; omitted keeps what is stored",
      }),
  })
  .openapi("ModemExitCreate");

const errors = {
  400: { description: "Invalid input", content: { "application/json": { schema: ErrorBody } } },
  401: {
    description: "Missing or unknown X-API-Key",
    content: { "application/json": { schema: ErrorBody } },
  },
  403: { description: "Not an operator account", content: { "application/json": { schema: ErrorBody } } },
} as const;
const unavailable = {
  503: {
    description:
      "Saved, but the selection pool was not updated: repeat the same request (E_UNAVAILABLE); or upstream credentials were given and MODEM_UPSTREAM_KEY is not set (E_CONFIG)",
    content: { "application/json": { schema: ErrorBody } },
  },
} as const;

const createExit = createRoute({
  method: "post",
  path: "/v1/admin/modem-exits",
  summary: "Register a production modem exit (pool mbl) and put it up for sale; same host:port updates it",
  tags: [TAG],
  security: SECURITY,
  request: { body: { required: true, content: { "application/json": { schema: ModemExitCreate } } } },
  responses: {
    201: { description: "Registered", content: { "application/json": { schema: ModemExit } } },
    200: {
      description: "Already registered at this address: updated",
      content: { "application/json": { schema: ModemExit } },
    },
    ...errors,
    404: {
      description: "E_NOT_FOUND: farmerAccountId names no account",
      content: { "application/json": { schema: ErrorBody } },
    },
    409: {
      description: "E_CONFLICT: farmerAccountId names an account that is not a farmer or supplier",
      content: { "application/json": { schema: ErrorBody } },
    },
    ...unavailable,
  },
});

const listExits = createRoute({
  method: "get",
  path: "/v1/admin/modem-exits",
  summary: "Registered production modem exits",
  tags: [TAG],
  security: SECURITY,
  responses: {
    200: {
      description: "All live registrations",
      content: {
        "application/json": { schema: z.object({ exits: z.array(ModemExit) }).openapi("ModemExitList") },
      },
    },
    ...errors,
  },
});

const deleteExit = createRoute({
  method: "delete",
  path: "/v1/admin/modem-exits/{id}",
  summary: "Take a modem exit off sale and remove its registration",
  tags: [TAG],
  security: SECURITY,
  request: {
    params: z.object({
      id: z
        .string()
        .regex(/^modem_[0-9a-f]{16}$/, "must be a modem exit id (modem_...)")
        .openapi({ param: { name: "id", in: "path" } }),
    }),
  },
  responses: {
    200: {
      description: "Removed",
      content: { "application/json": { schema: z.object({ id: z.string(), deleted: z.literal(true) }) } },
    },
    404: { description: "No such exit", content: { "application/json": { schema: ErrorBody } } },
    ...errors,
    ...unavailable,
  },
});

function view(row: ModemExitRow & { reserved_until?: Date | null }) {
  return {
    id: row.id,
    host: row.host,
    port: row.port,
    country: row.country,
    carrier: row.carrier,
    city: row.city,
    ipType: row.ip_type,
    pool: "mbl" as const,
    rotationWebhook: row.rotation_url !== null,
    upstreamAuth: row.upstream_auth_sealed !== null,
    farmerAccountId: row.account_id,
    ...(row.reserved_until === undefined
      ? {}
      : { reservedUntil: row.reserved_until ? new Date(row.reserved_until).toISOString() : null }),
    createdAt: new Date(row.created_at).toISOString(),
  };
}

async function syncOr503(c: Context<AppEnv>, row: ModemExitRow) {
  try {
    await syncModemListing(c.get("deps").redis, row);
  } catch {
    throw new ApiError(
      "E_UNAVAILABLE",
      "saved, but the selection pool could not be updated; repeat the request",
      {
        headers: { "Retry-After": "1" },
      },
    );
  }
}

export function registerModemExits(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme; its middleware covers /v1/reseller/*
  // Before validation, like the reseller routes: anonymous callers learn nothing about the schema.
  for (const path of ["/v1/admin/modem-exits", "/v1/admin/modem-exits/*"]) {
    app.use(path, async (c, next) => {
      await requireOperator(c, "modem exits");
      await next();
    });
  }
  const actorOf = (c: Context<AppEnv>) => callerOf(c).accountId;

  app.openapi(createExit, async (c) => {
    const { upstreamAuth, ...body } = c.req.valid("json");
    const deps = c.get("deps");
    let upstreamAuthSealed: string | null | undefined = upstreamAuth === null ? null : undefined;
    if (upstreamAuth) {
      const key = deps.config.MODEM_UPSTREAM_KEY;
      if (!key)
        throw new ApiError(
          "E_CONFIG",
          "MODEM_UPSTREAM_KEY is not set: upstream credentials cannot be stored",
        );
      upstreamAuthSealed = await sealUpstreamAuth(key, upstreamAuth);
    }
    if (body.farmerAccountId) {
      const kind = await accountKindOf(deps.db, body.farmerAccountId);
      if (!kind) throw new ApiError("E_NOT_FOUND", `farmerAccountId: no account ${body.farmerAccountId}`);
      if (kind !== "farmer" && kind !== "supplier")
        throw new ApiError(
          "E_CONFLICT",
          `farmerAccountId: ${body.farmerAccountId} is a ${kind} account; a modem exit belongs to a farmer or supplier account (or null: the house's)`,
        );
    }
    const { exit, created } = await withTransaction(deps.db, (tx) =>
      registerModemExit(tx, actorOf(c), { ...body, upstreamAuthSealed }),
    );
    await syncOr503(c, exit);
    return c.json(view(exit), created ? 201 : 200);
  });

  app.openapi(listExits, async (c) => {
    const exits = await listModemExits(c.get("deps").db);
    c.header("Cache-Control", "no-store");
    return c.json({ exits: exits.map(view) }, 200);
  });

  app.openapi(deleteExit, async (c) => {
    const { id } = c.req.valid("param");
    const deps = c.get("deps");
    const exit = await withTransaction(deps.db, (tx) => removeModemExit(tx, actorOf(c), id));
    if (!exit) {
      // A repeat after a 503 finds it deleted already: still make sure it is off sale.
      const gone = await findModemExit(deps.db, id);
      if (gone?.deleted_at) await syncOr503(c, gone);
      throw new ApiError("E_NOT_FOUND", `no modem exit ${id}`);
    }
    await syncOr503(c, exit);
    return c.json({ id: exit.id, deleted: true as const }, 200);
  });
}
