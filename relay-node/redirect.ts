import { keys } from "../shared/keys.ts";
import { control } from "../shared/messages.ts";
import type { PeerConn, RelayState } from "./state.ts";
import { OPEN } from "./wire.ts";

/**
 * Sends relay_redirect when the operator pinned this device to another region that has a relay.
 * Only called for sockets whose device_info said supportsRelayRedirect: old clients would treat
 * the message as noise at best.
 */
export async function maybeRedirect(state: RelayState, conn: PeerConn): Promise<boolean> {
  const region = await state.redis.hget(keys.deviceRegionOverride(), conn.device.id);
  if (!region || region === state.config.RELAY_REGION) return false;
  const relay = state.config.REGION_RELAYS[region];
  if (!relay || relay === state.publicUrl) return false;
  if (conn.ws.readyState !== OPEN) return false;
  conn.ws.send(control("relay_redirect", { relay, reason: "geo" }));
  state.log.info({ deviceId: conn.device.id, region }, "peer redirect");
  return true;
}
