import { describe, expect, it } from "vitest";
import { hs256Check } from "./jwt.node.ts";
import { signJwt, verifyJwt, verifyJwtWith } from "./jwt.ts";

const secret = "a-jwt-secret-of-some-length";
const now = 1_900_000_000;

/** Replaces one character of a token segment with another base64url character. */
function flip(token: string, segment: number): string {
  const parts = token.split(".");
  const s = parts[segment]!;
  const i = Math.floor(s.length / 2);
  parts[segment] = s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
  return parts.join(".");
}

/** The token with other claims (validly encoded) and its original signature. */
function withClaims(token: string, claims: object): string {
  const [header, , sig] = token.split(".");
  return `${header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${sig}`;
}

describe("HS256 with node:crypto (the relay) and WebCrypto (the API) agree", async () => {
  const good = await signJwt({ sub: "agent_1", kind: "peer", gen: 1, exp: now + 60 }, secret);
  const expired = await signJwt({ sub: "agent_1", exp: now - 1 }, secret);
  const noExp = await signJwt({ sub: "agent_1" }, secret);
  const cases: [string, string, string][] = [
    ["a valid token", good, "ok"],
    [
      "claims altered (gen 2), signature kept",
      withClaims(good, { sub: "agent_1", kind: "peer", gen: 2, exp: now + 60 }),
      "signature",
    ],
    ["an altered signature", flip(good, 2), "signature"],
    ["a signature cut short", good.slice(0, -4), "signature"],
    ["an empty signature", `${good.split(".").slice(0, 2).join(".")}.`, "signature"],
    [
      "another secret's signature",
      await signJwt({ sub: "agent_1", exp: now + 60 }, `${secret}-other`),
      "signature",
    ],
    ["an expired token", expired, "expired"],
    ["no exp claim", noExp, "expired"],
    ["two segments", good.split(".").slice(0, 2).join("."), "malformed"],
    ["another header", `eyJhbGciOiJub25lIn0.${good.split(".").slice(1).join(".")}`, "malformed"],
    ["claims that are not JSON", `${good.split(".")[0]}.bm90IGpzb24.${good.split(".")[2]}`, "malformed"],
  ];
  it.each(cases)("%s", async (_name, token, want) => {
    const web = await verifyJwt(token, secret, now);
    const node = verifyJwtWith(token, now, hs256Check(secret));
    expect(web.ok ? "ok" : web.reason).toBe(want);
    expect(node).toEqual(web);
  });
});
