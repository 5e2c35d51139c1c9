import type { Deps } from "./deps.ts";

/** Worker bindings: plain string vars and secrets (see README "Configure"). */
export type Bindings = Record<string, string | undefined>;

export type AppEnv = {
  Bindings: Bindings;
  Variables: { requestId: string; deps: Deps };
};
