import type { Deps } from "./deps.ts";
import type { ApiKeyAccount } from "./services/auth.ts";

/** Worker bindings: plain string vars and secrets (see README "Configure"). */
export type Bindings = Record<string, string | undefined>;

export type AppEnv = {
  Bindings: Bindings;
  Variables: {
    requestId: string;
    deps: Deps;
    /** The account behind X-API-Key, set by `requireApiKey` in a route's auth middleware. */
    caller?: ApiKeyAccount;
  };
};
