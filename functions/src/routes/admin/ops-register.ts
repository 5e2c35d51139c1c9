/** The issue-10 operations routes (earnings rates, capped ops-agent actions, proposals), registered together. */
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { registerAdminEarningsRates } from "./earnings-rates.ts";
import { registerAdminOpsActions } from "./ops-actions.ts";
import { registerAdminProposals } from "./proposals.ts";

export function registerAdminOps(app: OpenAPIHono<AppEnv>) {
  registerAdminEarningsRates(app);
  registerAdminOpsActions(app);
  registerAdminProposals(app);
}
