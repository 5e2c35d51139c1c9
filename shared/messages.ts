import { z } from "zod";

/** WebSocket close codes of docs/protocol.md section 2 that both ends use. */
export const CLOSE_NO_TOKEN = 4001; // no token, or one that cannot be parsed: register again
export const CLOSE_BAD_TOKEN = 4002; // expired, revoked or wrong claims: refresh
export const CLOSE_REDIRECT = 4100; // the client leaves to follow relay_redirect

export const TUNNEL_FAILURE_REASONS = [
  "connection_refused",
  "dns_failed",
  "timeout",
  "blocked_target",
  "unknown",
] as const;
export type TunnelFailureReason = (typeof TUNNEL_FAILURE_REASONS)[number];

// The control messages of docs/protocol.md section 2, one discriminated union per direction. Fields
// not listed are dropped (newer clients may add some); a known type whose fields have the wrong
// shape is invalid as a whole and the receiver counts and ignores it (ADR 0022). Fields no receiver
// reads (a heartbeat's timestamp, durationMs, currentIp) are not checked: a client must never lose
// its heartbeat_ack over one of those. There is no
// relay <-> gateway control channel: the gateway asks for tunnels with an HTTP upgrade
// (docs/internal.md), so these two unions are the whole JSON contract.

const sessionId = z.string().min(1).max(255);
const base64 = z.string();
/** A TCP port; some relays send it as text, which we accept (the Go peer does too). */
const port = z
  .union([
    z.number(),
    z
      .string()
      .regex(/^\d{1,5}$/)
      .transform(Number),
  ])
  .pipe(z.number().int().min(1).max(65535));
/** Some public clients send booleans as strings; we accept both and read "true" as true. */
const looseBoolean = z.union([z.boolean(), z.enum(["true", "false"])]);

export const deviceInfoSchema = z.object({
  country: z.string().optional(),
  carrier: z.string().optional(),
  currentIp: z.unknown().optional(),
  /** `binary-v1` opts into binary frames; anything else (or nothing) means JSON + base64. */
  protocol: z.string().optional(),
  supportsRelayRedirect: looseBoolean.optional(),
  sdkVersion: z.string().optional(),
  /** Ours: `flow-v1` (window updates and half close; needs binary-v1). */
  capabilities: z.array(z.string()).optional(),
});
export type DeviceInfo = z.infer<typeof deviceInfoSchema>;

const tunnelData = z.object({
  type: z.literal("tunnel_data"),
  payload: z.object({ sessionId, data: base64 }),
});

/** Peer -> relay. */
export const peerToRelaySchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("device_info"), payload: deviceInfoSchema }),
  z.object({ type: z.literal("heartbeat"), payload: z.object({ timestamp: z.unknown().optional() }) }),
  z.object({ type: z.literal("tunnel_connected"), payload: z.object({ sessionId }) }),
  z.object({
    type: z.literal("tunnel_open_failed"),
    payload: z.object({
      sessionId,
      /** One of TUNNEL_FAILURE_REASONS; the relay reads any other value as `unknown`. */
      reason: z.string().optional(),
      detail: z.string().optional(),
      /** Older clients put the detail here. */
      error: z.string().optional(),
      durationMs: z.unknown().optional(),
    }),
  }),
  z.object({
    type: z.literal("tunnel_closed"),
    payload: z.object({ sessionId, error: z.string().optional() }),
  }),
  tunnelData,
  z.object({
    type: z.literal("rotation_complete"),
    // A peer echoes the request's id, which a relay may have left out: null is accepted.
    payload: z.object({
      requestId: z.string().nullish(),
      success: looseBoolean.optional(),
      error: z.unknown().optional(),
    }),
  }),
]);
export type PeerToRelay = z.infer<typeof peerToRelaySchema>;

/** Relay -> peer. */
export const relayToPeerSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("connected"),
    payload: z.object({ deviceId: z.string(), ip: z.string(), relayId: z.string() }),
  }),
  z.object({ type: z.literal("heartbeat_ack"), payload: z.object({}) }),
  z.object({
    type: z.literal("tunnel_connect"),
    payload: z.object({ sessionId, host: z.string().min(1), port }),
  }),
  z.object({ type: z.literal("tunnel_close"), payload: z.object({ sessionId }) }),
  tunnelData,
  z.object({
    type: z.literal("relay_redirect"),
    payload: z.object({ relay: z.string(), reason: z.string().optional() }),
  }),
  z.object({ type: z.literal("rotate_ip_request"), payload: z.object({ requestId: z.string() }) }),
]);
export type RelayToPeer = z.infer<typeof relayToPeerSchema>;

export type ControlMessage = PeerToRelay | RelayToPeer;
export type ControlType = ControlMessage["type"];
export const PEER_TO_RELAY_TYPES = peerToRelaySchema.options.map((o) => o.shape.type.value);
export const RELAY_TO_PEER_TYPES = relayToPeerSchema.options.map((o) => o.shape.type.value);

/**
 * A control message as received: `known` with the typed message, `unknown` for a type this side
 * does not handle (ignored, never fatal: newer peers may send more), `invalid` for text that is
 * not a control message or a known type with malformed fields (counted by the receiver).
 */
export type Received<M> =
  | { kind: "known"; msg: M }
  | { kind: "unknown"; type: string }
  | { kind: "invalid"; type?: string; problem: string };

type Schema<M> = {
  safeParse(v: unknown): { success: true; data: M } | { success: false; error: z.ZodError };
};

function receive<M extends ControlMessage>(
  schema: Schema<M>,
  types: readonly string[],
  text: string,
): Received<M> {
  const raw = parseControl(text);
  if (!raw) return { kind: "invalid", problem: "not a JSON object with a string type" };
  if (!types.includes(raw.type)) return { kind: "unknown", type: raw.type };
  const r = schema.safeParse(raw);
  if (r.success) return { kind: "known", msg: r.data };
  const issue = r.error.issues[0];
  return {
    kind: "invalid",
    type: raw.type,
    problem: `${issue?.path.join(".") ?? ""}: ${issue?.message ?? "invalid"}`,
  };
}

/** What the relay reads from a peer's text frame. Text frames only: binary data frames never come here. */
export function receiveFromPeer(text: string): Received<PeerToRelay> {
  return receive(peerToRelaySchema, PEER_TO_RELAY_TYPES, text);
}

/** What a peer reads from the relay's text frame. */
export function receiveFromRelay(text: string): Received<RelayToPeer> {
  return receive(relayToPeerSchema, RELAY_TO_PEER_TYPES, text);
}

/**
 * The untyped first step: we accept `{type, payload: {...}}` and flat `{type, ...fields}` (some
 * public clients send that), payload fields winning; a payload that is not an object counts as
 * empty. Undefined for anything that is not a JSON object with a string `type`.
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

export type ControlPayload<T extends ControlType> =
  z.input<typeof peerToRelaySchema | typeof relayToPeerSchema> extends infer U
    ? U extends { type: T; payload: infer P }
      ? P
      : never
    : never;

/** The form we always send: `{"type": ..., "payload": {...}}`, typed by the unions above. */
export function control<T extends ControlType>(type: T, payload: ControlPayload<T>): string {
  return JSON.stringify({ type, payload });
}
