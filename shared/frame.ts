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

/**
 * flow-v1 window growth, the receiver's side (the relay for peer -> customer bytes, the SDKs for
 * relay -> target bytes). A tunnel moves at most a window per round trip of a window update, and
 * under load that round trip is milliseconds: 256 KiB over 5 ms caps a tunnel near 50 MB/s. When
 * a whole window arrives within FAST_WINDOW_MS and the receiver's consumer kept up with it, the
 * next window update adds the window's size again (credit is additive, so every flow-v1 sender
 * accepts it), within a per-tunnel max and what is left of a budget shared by all tunnels.
 */
export const FAST_WINDOW_MS = 50;

/** One tunnel's receive window and the bytes of it that have arrived since `epochAt` (ms). */
export interface GrowingWindow {
  window: number;
  epochAt: number;
  epochBytes: number;
}

/** Counts `n` bytes that arrived at `now` (ms) towards the current window's epoch. */
export function windowArrived(w: GrowingWindow, n: number, now: number): void {
  if (w.epochBytes === 0) w.epochAt = now;
  w.epochBytes += n;
}

/**
 * At a window update: the extra credit to grant (and the window grows by it) when the whole window
 * arrived within FAST_WINDOW_MS and `keptUp`; else 0. A whole window, fast or not, starts the next epoch.
 */
export function windowGrowth(
  w: GrowingWindow,
  now: number,
  keptUp: boolean,
  max: number,
  budgetLeft: number,
): number {
  if (w.epochBytes < w.window) return 0;
  const fast = now - w.epochAt < FAST_WINDOW_MS && keptUp;
  w.epochBytes = 0;
  if (!fast) return 0;
  const extra = Math.min(w.window, max - w.window, budgetLeft);
  if (extra <= 0) return 0;
  w.window += extra;
  return extra;
}

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
