import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const here = import.meta.dirname;

// No Docker engine here: check the Dockerfile the way its parser would (instructions, continuation
// lines, FROM first) and that every file it copies exists in the repository.
const KEYWORDS = new Set([
  "FROM",
  "RUN",
  "CMD",
  "LABEL",
  "MAINTAINER",
  "EXPOSE",
  "ENV",
  "ADD",
  "COPY",
  "ENTRYPOINT",
  "VOLUME",
  "USER",
  "WORKDIR",
  "ARG",
  "ONBUILD",
  "STOPSIGNAL",
  "HEALTHCHECK",
  "SHELL",
]);

function dockerInstructions(text: string): { keyword: string; args: string }[] {
  const out: { keyword: string; args: string }[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!pending && (line === "" || line.startsWith("#"))) continue;
    if (pending && line.startsWith("#")) continue;
    const joined = pending + line;
    if (joined.endsWith("\\")) {
      pending = `${joined.slice(0, -1)} `;
      continue;
    }
    pending = "";
    const m = /^(\S+)\s+(.*)$/s.exec(joined);
    if (!m) throw new Error(`instruction without arguments: ${joined}`);
    out.push({ keyword: m[1]!, args: m[2]! });
  }
  if (pending) throw new Error("dangling line continuation at end of file");
  return out;
}

describe("fleet recipes", () => {
  it("the Dockerfile parses: known instructions only, FROM first, node:22-alpine, state on a volume", () => {
    const ins = dockerInstructions(readFileSync(join(here, "Dockerfile"), "utf8"));
    for (const i of ins) expect(KEYWORDS.has(i.keyword.toUpperCase()), i.keyword).toBe(true);
    expect(ins[0]!.keyword).toBe("FROM");
    const froms = ins.filter((i) => i.keyword === "FROM").map((i) => i.args.split(/\s+/)[0]);
    expect(froms.every((f) => f === "node:22-alpine")).toBe(true);
    expect(ins.find((i) => i.keyword === "ENV")?.args).toMatch(/PEER_STATE_FILE=\/data\/state\.json/);
    expect(ins.find((i) => i.keyword === "VOLUME")?.args).toBe('["/data"]');
    const entry = ins.find((i) => i.keyword === "ENTRYPOINT")!;
    expect(JSON.parse(entry.args)).toEqual(["node", "/app/dist/peer-node/src/cli.js"]);
    // Every build-context path the Dockerfile copies exists (context = repository root).
    for (const i of ins.filter((x) => x.keyword === "COPY" && !x.args.startsWith("--from"))) {
      const parts = i.args.split(/\s+/);
      for (const src of parts.slice(0, -1))
        expect(() => readFileSync(join(here, "..", src, src.endsWith("src") ? "cli.ts" : ""))).not.toThrow();
    }
  });

  it("the systemd template makes %i the device name and the state path, restarts, and never restarts on config errors", () => {
    const unit = readFileSync(join(here, "deploy", "peerproxy-peer@.service"), "utf8");
    const sections = new Map<string, Map<string, string[]>>();
    let current: Map<string, string[]> | undefined;
    for (const raw of unit.split("\n")) {
      const line = raw.trim();
      if (!line || line.startsWith("#")) continue;
      const sec = /^\[(\w+)\]$/.exec(line);
      if (sec) {
        current = new Map();
        sections.set(sec[1]!, current);
        continue;
      }
      const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
      expect(kv, line).not.toBeNull();
      expect(current, "key before any section").toBeDefined();
      const list = current!.get(kv![1]!) ?? [];
      list.push(kv![2]!);
      current!.set(kv![1]!, list);
    }
    expect([...sections.keys()]).toEqual(["Unit", "Service", "Install"]);
    const svc = sections.get("Service")!;
    expect(svc.get("Environment")).toEqual(
      expect.arrayContaining(["AGENT_NAME=%i", "PEER_STATE_FILE=/var/lib/peerproxy-peer/%i.json"]),
    );
    expect(svc.get("ExecStart")?.[0]).toMatch(/peerproxy-peer$/);
    expect(svc.get("Restart")).toEqual(["always"]);
    expect(svc.get("RestartPreventExitStatus")).toEqual(["1 2"]);
    expect(svc.get("StateDirectory")).toEqual(["peerproxy-peer"]);
    expect(sections.get("Unit")!.get("After")).toEqual(["network-online.target"]);
    expect(sections.get("Install")!.get("WantedBy")).toEqual(["multi-user.target"]);
  });
});
