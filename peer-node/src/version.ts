/** Sent as `sdkVersion` at registration and in device_info. Keep in step with package.json. */
export const SDK_VERSION = "peerproxy-peer-node/0.1.0";
