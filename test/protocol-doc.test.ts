// docs/protocol.md stays true to the code it describes: the control message tables are the two
// unions of shared/messages.ts, and the close codes, failure reasons, username tokens, gateway
// error codes and endpoint paths it names are the ones the code uses.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GATEWAY_ERRORS } from "../gateway-node/errors.ts";
import { TOKENS } from "../shared/dsl.ts";
import { MAX_FRAME_BYTES } from "../shared/frame.ts";
import {
  CLOSE_BAD_TOKEN,
  CLOSE_NO_TOKEN,
  CLOSE_REDIRECT,
  PEER_TO_RELAY_TYPES,
  RELAY_TO_PEER_TYPES,
  TUNNEL_FAILURE_REASONS,
} from "../shared/messages.ts";

const root = join(import.meta.dirname, "..");
const doc = readFileSync(join(root, "docs", "protocol.md"), "utf8");

/** The `type` column of the table that follows the line `heading` (e.g. "Peer -> relay:"). */
function tableTypes(heading: string): string[] {
  const start = doc.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`docs/protocol.md has no "${heading}" line`);
  const types: string[] = [];
  const lines = doc.slice(start + heading.length + 2).split("\n");
  const header = lines.findIndex((l) => l.startsWith("|"));
  // Skip the header row and the separator row.
  for (const line of lines.slice(header + 2)) {
    const m = /^\|\s*`([a-z_]+)`\s*\|/.exec(line);
    if (!m) break;
    types.push(m[1]!);
  }
  return types;
}

describe("docs/protocol.md", () => {
  it("lists exactly the peer -> relay message types of the union in shared/messages.ts", () => {
    expect(tableTypes("Peer -> relay:").sort()).toEqual([...PEER_TO_RELAY_TYPES].sort());
  });

  it("lists exactly the relay -> peer message types of the union in shared/messages.ts", () => {
    expect(tableTypes("Relay -> peer:").sort()).toEqual([...RELAY_TO_PEER_TYPES].sort());
  });

  it("names the close codes, the tunnel_open_failed reasons and the frame size limit the code uses", () => {
    for (const code of [CLOSE_NO_TOKEN, CLOSE_BAD_TOKEN, CLOSE_REDIRECT])
      expect(doc).toContain(`**${code}**`);
    for (const reason of TUNNEL_FAILURE_REASONS) expect(doc).toContain(`\`${reason}\``);
    expect(MAX_FRAME_BYTES).toBe(4 * 1024 * 1024);
    expect(doc).toContain("over 4 MiB");
  });

  it("names every username DSL token", () => {
    for (const token of TOKENS) expect(doc, token).toMatch(new RegExp(`\`${token}[\\s\`-]`));
  });

  it("lists exactly the gateway's error codes", () => {
    const section = doc.slice(doc.indexOf("## 3."), doc.indexOf("## 4."));
    const listed = section.slice(section.indexOf("The gateway's codes:"));
    const codes = [...listed.slice(0, listed.indexOf("[errors.md]")).matchAll(/`(E_[A-Z_]+)`/g)].map(
      (m) => m[1],
    );
    expect(codes.sort()).toEqual(Object.keys(GATEWAY_ERRORS).sort());
  });

  it("names only API paths the Worker routes", () => {
    const sources = [
      "functions/src/routes/peer/register.ts",
      "functions/src/routes/peer/refresh.ts",
      "functions/src/routes/peer/android.ts",
      "functions/src/routes/x402/pool.ts",
      "functions/src/routes/x402/pricing.ts",
      "functions/src/routes/x402/proxy.ts",
      "functions/src/routes/x402/manage.ts",
      "functions/src/routes/x402/discovery.ts",
      "functions/src/routes/stock.ts",
    ]
      .map((p) => readFileSync(join(root, p), "utf8"))
      .join("\n");
    const paths = [...doc.matchAll(/`(?:GET\|POST |GET |POST )?(\/v1\/[a-z0-9/{}._-]+[a-z}])/gi)].map(
      (m) => m[1]!,
    );
    expect(paths.length).toBeGreaterThan(8);
    for (const path of new Set(paths)) {
      // Manage routes are built from a base constant; the rest appear literally.
      const literal = path.startsWith("/v1/x402/manage/") ? path.split("/").slice(0, 5).join("/") : path;
      expect(sources, path).toContain(literal);
    }
  });
});
