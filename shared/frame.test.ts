import { describe, expect, it } from "vitest";
import {
  dataFrames,
  decodeFrame,
  encodeFrame,
  encodeWindow,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_WINDOW,
  MAX_FRAME_BYTES,
  windowCredit,
} from "./frame.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const fromHex = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ""), "hex"));

describe("binary-v1 frame codec", () => {
  it("encodes the PROTOCOL.md vector: sessionId abc, payload 09 08 07 -> 01 03 61 62 63 09 08 07", () => {
    expect(hex(encodeFrame(FRAME_DATA, "abc", fromHex("090807")))).toBe("0103616263090807");
  });

  it("decodes the PROTOCOL.md vector back to type 1, sessionId abc, payload 09 08 07", () => {
    const r = decodeFrame(fromHex("01 03 61 62 63 09 08 07"));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.frame.type).toBe(FRAME_DATA);
    expect(r.frame.sessionId).toBe("abc");
    expect(hex(r.frame.payload)).toBe("090807");
  });

  it("round-trips every type with empty, small and multi-byte UTF-8 session ids", () => {
    for (const type of [FRAME_DATA, 0x02, FRAME_CLOSE, FRAME_WINDOW, 0x7f]) {
      for (const sid of ["a", "s_0123456789abcdef", "séssion-ü", "x".repeat(255)]) {
        for (const payload of [new Uint8Array(0), fromHex("00ff10"), new Uint8Array(70_000).fill(7)]) {
          const r = decodeFrame(encodeFrame(type, sid, payload));
          expect(r.ok).toBe(true);
          if (!r.ok) continue;
          expect(r.frame.type).toBe(type);
          expect(r.frame.sessionId).toBe(sid);
          expect(Buffer.from(r.frame.payload).equals(Buffer.from(payload))).toBe(true);
        }
      }
    }
  });

  it("a close frame carries no payload: 03 03 61 62 63", () => {
    expect(hex(encodeFrame(FRAME_CLOSE, "abc"))).toBe("0303616263");
  });

  it("a window update carries a 4-byte big-endian credit", () => {
    const f = encodeWindow("abc", 262_144);
    expect(hex(f)).toBe("040361626300040000");
    const r = decodeFrame(f);
    expect(r.ok && windowCredit(r.frame)).toBe(262_144);
  });

  it("a window update whose payload is not 4 bytes has no credit", () => {
    const r = decodeFrame(fromHex("04 01 61 00 01"));
    expect(r.ok && windowCredit(r.frame)).toBeUndefined();
  });

  it("refuses frames shorter than 2 bytes", () => {
    expect(decodeFrame(new Uint8Array(0))).toEqual({ ok: false, error: "too_short" });
    expect(decodeFrame(fromHex("01"))).toEqual({ ok: false, error: "too_short" });
  });

  it("refuses a session id length of 0", () => {
    expect(decodeFrame(fromHex("01 00 09 08"))).toEqual({ ok: false, error: "bad_session_length" });
  });

  it("refuses a session id length that runs past the buffer", () => {
    expect(decodeFrame(fromHex("01 05 61 62 63"))).toEqual({ ok: false, error: "too_short" });
  });

  it("refuses a session id that is not UTF-8", () => {
    expect(decodeFrame(fromHex("01 02 ff fe 00"))).toEqual({ ok: false, error: "bad_session_id" });
  });

  it("refuses frames over 4 MiB and accepts exactly 4 MiB", () => {
    const over = new Uint8Array(MAX_FRAME_BYTES + 1);
    over[0] = 1;
    over[1] = 1;
    expect(decodeFrame(over)).toEqual({ ok: false, error: "too_large" });
    const exact = new Uint8Array(MAX_FRAME_BYTES);
    exact[0] = 1;
    exact[1] = 1;
    exact[2] = 0x61;
    const r = decodeFrame(exact);
    expect(r.ok && r.frame.payload.length).toBe(MAX_FRAME_BYTES - 3);
  });

  it("refuses to encode an empty or over-long session id", () => {
    expect(() => encodeFrame(FRAME_DATA, "")).toThrow(RangeError);
    expect(() => encodeFrame(FRAME_DATA, "x".repeat(256))).toThrow(RangeError);
  });

  it("a 64 KiB read is one frame (64 KiB of payload, the header on top)", () => {
    const frames = [...dataFrames("0123456789abcdef", new Uint8Array(64 * 1024).fill(7))];
    expect(frames).toHaveLength(1);
    expect(frames[0]!.length).toBe(2 + 16 + 64 * 1024);
  });

  it("splits a 5 MiB payload into frames of at most 64 KiB payload and reassembles it byte for byte", () => {
    const payload = new Uint8Array(5 * 1024 * 1024 + 123);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
    const frames = [...dataFrames("sess-1", payload)];
    expect(frames.length).toBeGreaterThan(80);
    const parts: Uint8Array[] = [];
    for (const f of frames) {
      const r = decodeFrame(f);
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.frame.payload.length).toBeLessThanOrEqual(64 * 1024);
      expect(r.frame.type).toBe(FRAME_DATA);
      expect(r.frame.sessionId).toBe("sess-1");
      parts.push(r.frame.payload);
    }
    expect(Buffer.concat(parts).equals(Buffer.from(payload))).toBe(true);
  });

  it("an empty payload yields no data frames", () => {
    expect([...dataFrames("s", new Uint8Array(0))]).toHaveLength(0);
  });

  it("decodes frames that arrive as views into a larger buffer (split writes reassembled by the transport)", () => {
    const a = encodeFrame(FRAME_DATA, "abc", fromHex("090807"));
    const b = encodeFrame(FRAME_DATA, "de", fromHex("01"));
    const joined = new Uint8Array(a.length + b.length + 4);
    joined.set(a, 2);
    joined.set(b, 2 + a.length);
    const r1 = decodeFrame(joined.subarray(2, 2 + a.length));
    const r2 = decodeFrame(joined.subarray(2 + a.length, 2 + a.length + b.length));
    expect(r1.ok && hex(r1.frame.payload)).toBe("090807");
    expect(r2.ok && r2.frame.sessionId).toBe("de");
    const w = encodeWindow("abc", 5);
    const shifted = new Uint8Array(w.length + 3);
    shifted.set(w, 3);
    const r3 = decodeFrame(shifted.subarray(3));
    expect(r3.ok && windowCredit(r3.frame)).toBe(5);
  });
});
