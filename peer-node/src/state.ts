import { randomBytes } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";

/** What a peer persists between runs (PROTOCOL.md section 1): enough to resume the same device. */
export interface PeerState {
  deviceId: string;
  refreshToken: string;
  relay: string;
}

/** The saved state, or undefined when the file is missing or unreadable (then we register). */
export function readState(path: string): PeerState | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    const v = JSON.parse(text) as Partial<PeerState>;
    if (typeof v.deviceId === "string" && typeof v.refreshToken === "string" && typeof v.relay === "string")
      return { deviceId: v.deviceId, refreshToken: v.refreshToken, relay: v.relay };
  } catch {}
  return undefined;
}

/**
 * Writes the state so that a crash at any moment leaves either the old or the new file, never a
 * torn one: a private temp file beside the target (same filesystem), fsync, then rename. Mode 0600
 * because the refresh token is a credential.
 */
export function writeState(path: string, state: PeerState): void {
  try {
    writeAtomically(path, state);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw Object.assign(new Error(`cannot write state file ${path}: ${e.message}`), { code: e.code });
  }
}

function writeAtomically(path: string, state: PeerState): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
