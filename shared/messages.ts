import { z } from "zod";

/** WebSocket close codes of PROTOCOL.md section 2 that both ends use. */
export const CLOSE_NO_TOKEN = 4001; // no token, or one that cannot be parsed: register again
export const CLOSE_BAD_TOKEN = 4002; // expired, revoked or wrong claims: refresh
export const CLOSE_REDIRECT = 4100; // the client leaves to follow relay_redirect

/**
 * Relay control messages (JSON text frames). We accept `{type, payload: {...}}` and flat
 * `{type, ...fields}` (some public clients send that); we always send the payload form.
 */
export function parseControl(text: string): { type: string; payload: Record<string, unknown> } | undefined {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!msg || typeof msg !== "object" || Array.isArray(msg)) return undefined;
  const { type, payload, ...flat } = msg as Record<string, unknown>;
  if (typeof type !== "string") return undefined;
  const body =
    payload && typeof payload === "object" && !Array.isArray(payload)
      ? (payload as Record<string, unknown>)
      : {};
  return { type, payload: { ...flat, ...body } };
}

export function control(type: string, payload: Record<string, unknown> = {}): string {
  return JSON.stringify({ type, payload });
}

export const TUNNEL_FAILURE_REASONS = [
  "connection_refused",
  "dns_failed",
  "timeout",
  "blocked_target",
  "unknown",
] as const;
export type TunnelFailureReason = (typeof TUNNEL_FAILURE_REASONS)[number];

export const deviceInfoSchema = z.object({
  country: z.string().optional(),
  carrier: z.string().optional(),
  currentIp: z.string().optional(),
  protocol: z.string().optional(),
  supportsRelayRedirect: z.boolean().optional(),
  sdkVersion: z.string().optional(),
  capabilities: z.array(z.string()).optional(),
});
export type DeviceInfo = z.infer<typeof deviceInfoSchema>;
