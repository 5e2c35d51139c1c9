/**
 * Binary-v1 tunnel frames on the relay WebSocket (PROTOCOL.md section 2):
 *   byte 0  type   byte 1  L = sessionId byte length (1..255)   bytes 2..  sessionId, then payload
 * Types: 0x01 data, 0x02 end of stream in one direction (flow-v1), 0x03 close (relay -> peer),
 * 0x04 window update (flow-v1; payload = 4-byte big-endian count of further bytes accepted).
 */

export const FRAME_DATA = 0x01;
export const FRAME_END = 0x02;
export const FRAME_CLOSE = 0x03;
export const FRAME_WINDOW = 0x04;

/** Frames larger than this close the socket (PROTOCOL.md). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** flow-v1 initial credit per session, each way. */
export const INITIAL_WINDOW = 256 * 1024;

export interface Frame {
  type: number;
  sessionId: string;
  payload: Uint8Array;
}

export type DecodeResult =
  | { ok: true; frame: Frame }
  | { ok: false; error: "too_short" | "bad_session_length" | "too_large" | "bad_session_id" };

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Frames one message. Throws RangeError on an empty or over-long sessionId. */
export function encodeFrame(
  type: number,
  sessionId: string,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const sid = utf8.encode(sessionId);
  if (sid.length < 1 || sid.length > 255)
    throw new RangeError(`sessionId must be 1..255 UTF-8 bytes, got ${sid.length}`);
  // Every byte is written below: skip the zero fill where Node's Buffer is there (a copy per chunk).
  const size = 2 + sid.length + payload.length;
  const out = typeof Buffer === "undefined" ? new Uint8Array(size) : Buffer.allocUnsafe(size);
  out[0] = type;
  out[1] = sid.length;
  out.set(sid, 2);
  out.set(payload, 2 + sid.length);
  return out;
}

export function encodeWindow(sessionId: string, bytes: number): Uint8Array {
  const p = new Uint8Array(4);
  new DataView(p.buffer).setUint32(0, bytes >>> 0, false);
  return encodeFrame(FRAME_WINDOW, sessionId, p);
}

/** Parses one WebSocket binary message. Unknown type bytes parse fine; callers ignore them. */
export function decodeFrame(buf: Uint8Array): DecodeResult {
  if (buf.length > MAX_FRAME_BYTES) return { ok: false, error: "too_large" };
  if (buf.length < 2) return { ok: false, error: "too_short" };
  const len = buf[1]!;
  if (len === 0) return { ok: false, error: "bad_session_length" };
  if (buf.length < 2 + len) return { ok: false, error: "too_short" };
  let sessionId: string;
  try {
    sessionId = fromUtf8.decode(buf.subarray(2, 2 + len));
  } catch {
    return { ok: false, error: "bad_session_id" };
  }
  return { ok: true, frame: { type: buf[0]!, sessionId, payload: buf.subarray(2 + len) } };
}

/** Reads a window update's credit; undefined if the payload is not exactly 4 bytes. */
export function windowCredit(frame: Frame): number | undefined {
  if (frame.payload.length !== 4) return undefined;
  return new DataView(frame.payload.buffer, frame.payload.byteOffset, 4).getUint32(0, false);
}

/**
 * Splits a payload into data frames of at most maxPayload payload bytes each (default 64 KiB: one
 * socket read is one frame; the header adds 3-257 bytes, far under MAX_FRAME_BYTES).
 */
export function* dataFrames(
  sessionId: string,
  payload: Uint8Array,
  maxPayload = 64 * 1024,
): Generator<Uint8Array> {
  for (let off = 0; off < payload.length; off += maxPayload)
    yield encodeFrame(FRAME_DATA, sessionId, payload.subarray(off, off + maxPayload));
}
