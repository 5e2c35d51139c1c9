/**
 * What every route answers besides its own responses, added to /openapi.json in one place so the
 * document says what the API does: the global hooks in app.ts answer 400 for a malformed request
 * and 401 for a missing credential on every route, and credentials travel in headers that are
 * security schemes, not parameters. The routes stay the source: this only reads their declarations.
 */

/** Credential headers a route may declare: the security scheme each one is. */
const CREDENTIAL_HEADERS: Record<string, { scheme: string; header: string; description: string }> = {
  "x-api-key": { scheme: "ApiKey", header: "X-API-Key", description: "An account API key, `psx_...`" },
  "x-session-token": {
    scheme: "SessionToken",
    header: "X-Session-Token",
    description: "The `x402s_...` session token an x402 purchase returned",
  },
  "payment-signature": {
    scheme: "PaymentSignature",
    header: "Payment-Signature",
    description:
      "x402 proof of payment: a Base tx hash or Solana signature, or the base64 x402 v2 payload bound to the paying wallet",
  },
  "x-payment": {
    scheme: "X402Payment",
    header: "X-PAYMENT",
    description: "x402 v1 payment payload (base64 JSON)",
  },
};

/** The header names the validation hook treats as credentials (missing -> 401, not 400). */
export const CREDENTIAL_HEADER_NAMES = new Set(Object.keys(CREDENTIAL_HEADERS));

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"] as const;

interface Parameter {
  in: string;
  name: string;
  required?: boolean;
}
interface Response {
  description: string;
  content?: Record<string, unknown>;
}
interface Operation {
  parameters?: Parameter[];
  requestBody?: unknown;
  security?: Record<string, string[]>[];
  responses?: Record<string, Response>;
}
interface Document {
  paths?: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, unknown>; securitySchemes?: Record<string, unknown> };
}

/** Completes a generated OpenAPI 3.1 document in place; `errorSchema` names the error body component. */
export function completeDocument<T>(generated: T, errorSchema: string): T {
  const doc = generated as Document;
  const errorContent = { "application/json": { schema: { $ref: `#/components/schemas/${errorSchema}` } } };
  const used = new Set<string>();
  for (const item of Object.values(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const takesInput = Boolean(op.requestBody || op.parameters?.length);
      // Credentials: declared by the route as header parameters; here they become its security.
      const required: string[] = [];
      const optional: string[] = [];
      op.parameters = (op.parameters ?? []).filter((p) => {
        const credential = p.in === "header" ? CREDENTIAL_HEADERS[p.name.toLowerCase()] : undefined;
        if (!credential) return true;
        (p.required ? required : optional).push(credential.scheme);
        used.add(p.name.toLowerCase());
        return false;
      });
      if (!op.parameters.length) delete op.parameters;
      if (!op.security && required.length + optional.length > 0) {
        const base = Object.fromEntries(required.map((s) => [s, []]));
        // Each optional credential is an alternative; with none required, so is sending none.
        op.security = [base, ...optional.map((s) => ({ ...base, [s]: [] }))];
      }
      for (const requirement of op.security ?? []) for (const s of Object.keys(requirement)) used.add(s);
      op.responses ??= {};
      const responses = op.responses;
      const needsCredential =
        (op.security ?? []).length > 0 && op.security!.every((r) => Object.keys(r).length);
      if (takesInput && !responses["400"])
        responses["400"] = {
          description:
            "E_VALIDATION: a parameter or the body is malformed (`details.issues` names each field), or E_BAD_REQUEST: the body is not JSON",
        };
      if (needsCredential && !responses["401"])
        responses["401"] = { description: "E_UNAUTHORIZED: the credential is missing, unknown or revoked" };
      // Every error answer has the one error body unless the route declared its own.
      for (const [status, response] of Object.entries(responses))
        if (Number(status) >= 400 && !response.content) response.content = errorContent;
    }
  }
  doc.components ??= {};
  doc.components.securitySchemes ??= {};
  const schemes = doc.components.securitySchemes;
  for (const [name, { scheme, header, description }] of Object.entries(CREDENTIAL_HEADERS)) {
    if (schemes[scheme] || !(used.has(name) || used.has(scheme))) continue;
    schemes[scheme] = { type: "apiKey", in: "header", name: header, description };
  }
  return generated;
}

/** Route paths as Hono holds them (`/v1/x/:id`) -> a matcher for the methods each path allows. */
export function allowedMethods(routes: readonly { path: string; method: string }[]) {
  const byPath = new Map<string, { re: RegExp; methods: Set<string> }>();
  for (const r of routes) {
    if (r.method === "ALL" || r.path.includes("*")) continue; // middleware
    let entry = byPath.get(r.path);
    if (!entry) {
      const pattern = r.path
        .split("/")
        .map((seg) => (seg.startsWith(":") ? "[^/]+" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
        .join("/");
      entry = { re: new RegExp(`^${pattern}/?$`), methods: new Set() };
      byPath.set(r.path, entry);
    }
    entry.methods.add(r.method.toUpperCase());
    if (r.method.toUpperCase() === "GET") entry.methods.add("HEAD");
  }
  return (path: string): string[] => {
    const methods = new Set<string>();
    for (const { re, methods: m } of byPath.values()) if (re.test(path)) for (const x of m) methods.add(x);
    return [...methods].sort();
  };
}
