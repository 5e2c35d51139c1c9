import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { formatUsername, parseUsername, type RouteRequest, UsernameParseError } from "./dsl.ts";
import { decodeFrame, encodeFrame, encodeWindow, windowCredit } from "./frame.ts";
import { deriveDeviceId } from "./jwt.ts";
import {
  CLOSE_BAD_TOKEN,
  CLOSE_NO_TOKEN,
  CLOSE_REDIRECT,
  type ControlType,
  control,
  PEER_TO_RELAY_TYPES,
  parseControl,
  RELAY_TO_PEER_TYPES,
  receiveFromPeer,
  receiveFromRelay,
  TUNNEL_FAILURE_REASONS,
} from "./messages.ts";

// The same file is read by peer-go/wire's tests: a change to the wire that one SDK makes and the
// other does not fails one of the two suites.

interface Vectors {
  frames: { name: string; type: number; sessionId: string; payloadHex: string; hex: string }[];
  windows: { sessionId: string; credit: number; hex: string }[];
  invalidFrames: { name: string; hex: string; error: string }[];
  closeCodes: { noToken: number; badToken: number; redirect: number };
  tunnelFailureReasons: string[];
  deviceIds: { apiKey: string; name: string; deviceId: string }[];
  controlParse: {
    name: string;
    text: string;
    parsed: { type: string; payload: Record<string, unknown> } | null;
  }[];
  controlEncode: { type: ControlType; payload: Record<string, unknown>; json: string }[];
  messages: MessageVector[];
  invalidMessages: MessageVector[];
  dsl: {
    valid: { username: string; parsed: RouteRequest }[];
    invalid: { username: string; token: string }[];
  };
}

interface MessageVector {
  direction: "peerToRelay" | "relayToPeer";
  name: string;
  json: string;
}

const vectors = JSON.parse(
  readFileSync(join(import.meta.dirname, "testdata", "wire-vectors.json"), "utf8"),
) as Vectors;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const fromHex = (h: string) => new Uint8Array(Buffer.from(h, "hex"));

describe("shared wire vectors (shared/testdata/wire-vectors.json)", () => {
  it("include the PROTOCOL.md frame vector 01 03 61 62 63 09 08 07", () => {
    expect(vectors.frames.some((f) => f.hex === "0103616263090807")).toBe(true);
  });

  it.each(vectors.frames.map((f) => [f.name, f] as const))("frame encodes and decodes: %s", (_, f) => {
    expect(hex(encodeFrame(f.type, f.sessionId, fromHex(f.payloadHex)))).toBe(f.hex);
    const r = decodeFrame(fromHex(f.hex));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.frame.type).toBe(f.type);
    expect(r.frame.sessionId).toBe(f.sessionId);
    expect(hex(r.frame.payload)).toBe(f.payloadHex);
  });

  it("window updates encode the credit as 4 bytes big-endian and read back", () => {
    for (const w of vectors.windows) {
      expect(hex(encodeWindow(w.sessionId, w.credit))).toBe(w.hex);
      const r = decodeFrame(fromHex(w.hex));
      expect(r.ok && windowCredit(r.frame)).toBe(w.credit);
    }
  });

  it.each(vectors.invalidFrames.map((f) => [f.name, f] as const))("invalid frame is refused: %s", (_, f) => {
    expect(decodeFrame(fromHex(f.hex))).toEqual({ ok: false, error: f.error });
  });

  it("close codes and tunnel_open_failed reasons", () => {
    expect([CLOSE_NO_TOKEN, CLOSE_BAD_TOKEN, CLOSE_REDIRECT]).toEqual([
      vectors.closeCodes.noToken,
      vectors.closeCodes.badToken,
      vectors.closeCodes.redirect,
    ]);
    expect([...TUNNEL_FAILURE_REASONS]).toEqual(vectors.tunnelFailureReasons);
  });

  it("deviceId = agent_ + first 16 hex of SHA-256(apiKey:name)", async () => {
    for (const d of vectors.deviceIds) expect(await deriveDeviceId(d.apiKey, d.name)).toBe(d.deviceId);
  });

  it.each(vectors.controlParse.map((c) => [c.name, c] as const))("control message parses: %s", (_, c) => {
    expect(parseControl(c.text) ?? null).toEqual(c.parsed);
  });

  it("control messages are sent in the nested form", () => {
    for (const c of vectors.controlEncode) expect(control(c.type, c.payload as never)).toBe(c.json);
  });

  const receive = (v: MessageVector) =>
    v.direction === "peerToRelay" ? receiveFromPeer(v.json) : receiveFromRelay(v.json);

  it("hold a valid vector for every control message type of both unions, and no other type", () => {
    const covered = (d: MessageVector["direction"]) =>
      [
        ...new Set(vectors.messages.filter((v) => v.direction === d).map((v) => parseControl(v.json)?.type)),
      ].sort();
    expect(covered("peerToRelay")).toEqual([...PEER_TO_RELAY_TYPES].sort());
    expect(covered("relayToPeer")).toEqual([...RELAY_TO_PEER_TYPES].sort());
  });

  it.each(vectors.messages.map((v) => [`${v.direction} ${v.name}`, v] as const))(
    "control message is valid in its union and re-encodes to the same text: %s",
    (_, v) => {
      const r = receive(v);
      expect(r.kind, JSON.stringify(r)).toBe("known");
      const raw = parseControl(v.json)!;
      expect(control(raw.type as ControlType, raw.payload as never)).toBe(v.json);
    },
  );

  it.each(vectors.invalidMessages.map((v) => [`${v.direction} ${v.name}`, v] as const))(
    "malformed control message is invalid in its union: %s",
    (_, v) => {
      expect(receive(v).kind).toBe("invalid");
    },
  );

  it("unknown types are unknown (ignored, not counted) and JSON that is no control message is invalid", () => {
    expect(receiveFromPeer('{"type":"future_thing","payload":{"x":1}}')).toEqual({
      kind: "unknown",
      type: "future_thing",
    });
    // Direction matters: heartbeat is a peer -> relay message only.
    expect(receiveFromRelay('{"type":"heartbeat","payload":{}}')).toEqual({
      kind: "unknown",
      type: "heartbeat",
    });
    expect(receiveFromPeer("[1,2]").kind).toBe("invalid");
  });

  it("the flat form parses into the same typed message, and a port sent as text becomes a number", () => {
    expect(
      receiveFromRelay('{"type":"tunnel_connect","sessionId":"s1","host":"example.com","port":"443"}'),
    ).toEqual({
      kind: "known",
      msg: { type: "tunnel_connect", payload: { sessionId: "s1", host: "example.com", port: 443 } },
    });
  });

  it("DSL examples parse to their result and format back", () => {
    for (const v of vectors.dsl.valid) {
      expect(parseUsername(v.username)).toEqual(v.parsed);
      expect(parseUsername(formatUsername(v.parsed))).toEqual(v.parsed);
    }
  });

  it("bad DSL usernames fail naming the token", () => {
    for (const v of vectors.dsl.invalid) {
      let token: string | undefined;
      try {
        parseUsername(v.username);
      } catch (err) {
        if (err instanceof UsernameParseError) token = err.token;
      }
      expect(token, v.username).toBe(v.token);
    }
  });
});
