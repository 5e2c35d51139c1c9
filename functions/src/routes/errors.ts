/** The OpenAPI shape of the one error body every route answers with (shared/errors.ts). */
import { z } from "@hono/zod-openapi";

/** The error body registered as the component `name`, and a response entry that uses it. */
export function errorSchema(name: string) {
  const ErrorBody = z
    .object({
      error: z.object({
        code: z.string(),
        message: z.string(),
        requestId: z.string(),
        docs: z.string(),
        details: z.unknown().optional(),
      }),
    })
    .openapi(name);
  const errorResponse = (description: string) => ({
    description,
    content: { "application/json": { schema: ErrorBody } },
  });
  return { ErrorBody, errorResponse };
}
