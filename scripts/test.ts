// `npm test`: lint, generated-file check, typecheck, then every suite against throwaway Redis and
// Postgres started for this run (unit + integration in Node, Worker tests inside workerd).
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { killAllNow } from "../dev/proc.ts";
import { runCommand } from "../dev/run.ts";
import { type StateServices, startStateServices } from "../dev/services.ts";

const root = join(import.meta.dirname, "..");
const bin = (name: string) => join(root, "node_modules", ".bin", name);
const only = process.argv.slice(2); // optional vitest filters, e.g. `npm test -- relay`
// A filter usually matches files of one suite only: the other then has nothing to run, which is fine.
const filterArgs = only.length ? ["--passWithNoTests", ...only] : [];

async function step(name: string, cmd: string, args: string[], env: Record<string, string> = {}, cwd = root) {
  const t0 = Date.now();
  console.log(`\n== ${name}`);
  const code = await runCommand(cmd, args, { cwd, env });
  const took = ((Date.now() - t0) / 1000).toFixed(1);
  console.log(`== ${name}: ${code === 0 ? "ok" : `FAILED (exit ${code})`} in ${took} s`);
  return code === 0;
}

let failed = 0;
const require = (ok: boolean) => {
  if (!ok) failed++;
  return ok;
};

/** Runs a step with its output held back, so steps running side by side print one after another. */
async function quietStep(name: string, cmd: string, args: string[]) {
  const t0 = Date.now();
  const child = spawn(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  const out: Buffer[] = [];
  child.stdout.on("data", (b: Buffer) => out.push(b));
  child.stderr.on("data", (b: Buffer) => out.push(b));
  const code = await new Promise<number>((resolve) => {
    child.on("close", (c, signal) => resolve(c ?? (signal ? 128 : 1)));
    child.on("error", () => resolve(127));
  });
  const took = ((Date.now() - t0) / 1000).toFixed(1);
  console.log(`\n== ${name}`);
  process.stdout.write(Buffer.concat(out));
  console.log(`== ${name}: ${code === 0 ? "ok" : `FAILED (exit ${code})`} in ${took} s`);
  return code === 0;
}

// tsc remembers what it checked (node_modules/.cache/tsc): a second run over an unchanged tree takes
// 5 s instead of 15-25; a changed file and everything that depends on it are checked again.
const incremental = (name: string) => [
  "--incremental",
  "--tsBuildInfoFile",
  join(root, "node_modules", ".cache", "tsc", `${name}.tsbuildinfo`),
];

const dir = mkdtempSync(join(tmpdir(), "peerproxy-test-"));
process.on("exit", killAllNow);
let services: StateServices | undefined;
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => void (services?.stop() ?? Promise.resolve()).finally(() => process.exit(130)));
// Redis and Postgres come up while the static checks run.
const starting = startStateServices({ dir, databaseUrl: process.env.TEST_DATABASE_URL });
starting.catch(() => {}); // a failure is thrown where it is awaited, after the checks
if (!only.length) {
  // The static checks are independent and each mostly one core's work: all at once on two cores.
  const checks = await Promise.all([
    quietStep("lint (biome)", bin("biome"), ["check", "."]),
    quietStep("lua scripts generated", process.execPath, ["scripts/gen-lua.ts", "--check"]),
    quietStep("typecheck (node)", bin("tsc"), ["-p", "tsconfig.json", ...incremental("node")]),
    quietStep("typecheck (worker)", bin("tsc"), ["-p", "functions/tsconfig.json", ...incremental("worker")]),
    quietStep("go peer (gofmt -l, go vet, go test)", "bash", ["peer-go/scripts/check.sh"]),
  ]);
  for (const ok of checks) require(ok);
}

services = await starting;
const env = { ...services.env, PEERPROXY_TEST_TMP: dir };
let passed = 0;
let failedTests = 0;
const fileTimes: [string, number][] = [];
/** The failed tests with the first lines of their errors: printed last, where a CI log's tail shows them. */
const failures: string[] = [];
/** Tests that failed and then passed on CI's retry (vitest.config.ts): named, so a flake gets fixed. */
const flaky: string[] = [];
/** Every file's start and end (ms since the epoch), kept after the run for a look at the schedule. */
const timeline: string[] = [];
const firstLines = (text: string) =>
  text
    .split("\n")
    .filter((line) => line.trim() && !line.includes("/node_modules/") && !line.includes("new Promise"))
    .slice(0, 6)
    .map((line) => `      ${line.slice(0, 300)}`)
    .join("\n");
const count = (file: string) => {
  try {
    const r = JSON.parse(readFileSync(file, "utf8"));
    passed += r.numPassedTests ?? 0;
    failedTests += r.numFailedTests ?? 0;
    for (const t of r.testResults ?? []) {
      fileTimes.push([relative(root, t.name), t.endTime - t.startTime]);
      timeline.push(`${t.startTime}\t${t.endTime}\t${relative(root, t.name)}`);
      if (
        t.status === "failed" &&
        !t.assertionResults?.some((a: { status: string }) => a.status === "failed")
      )
        failures.push(
          `${relative(root, t.name)}: ${firstLines(t.message ?? "the file failed outside any test")}`,
        );
      for (const a of t.assertionResults ?? [])
        if (a.status === "failed")
          failures.push(
            `${relative(root, t.name)} > ${a.fullName}\n${firstLines(a.failureMessages?.join("\n") ?? "")}`,
          );
        else if (a.status === "passed" && a.failureMessages?.length)
          flaky.push(`${relative(root, t.name)} > ${a.fullName}\n${firstLines(a.failureMessages[0])}`);
    }
  } catch {}
};
try {
  const nodeReport = join(dir, "node.json");
  require(
    await step(
      "tests (node: unit + integration)",
      bin("vitest"),
      ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${nodeReport}`, ...filterArgs],
      env,
    ),
  );
  count(nodeReport);
  const workerReport = join(dir, "worker.json");
  require(
    await step(
      "tests (worker, inside workerd)",
      bin("vitest"),
      [
        "run",
        "--config",
        "vitest.config.ts",
        "--reporter=default",
        "--reporter=json",
        `--outputFile.json=${workerReport}`,
        ...filterArgs,
      ],
      env,
      join(root, "functions"),
    ),
  );
  count(workerReport);
} finally {
  await services.stop();
  rmSync(dir, { recursive: true, force: true });
}
// Which files ran when (start, end in ms, file), for finding idle workers: the last full run's.
if (!only.length) {
  mkdirSync(join(root, "node_modules", ".cache"), { recursive: true });
  writeFileSync(
    join(root, "node_modules", ".cache", "peerproxy-test-timeline.tsv"),
    `${timeline.join("\n")}\n`,
  );
}
// The slowest files, so a suite that grows slower says where.
fileTimes.sort((a, b) => b[1] - a[1]);
if (fileTimes.length > 1) {
  console.log("\nslowest test files:");
  for (const [name, ms] of fileTimes.slice(0, 12))
    console.log(`  ${(ms / 1000).toFixed(1).padStart(6)} s  ${name}`);
}
if (flaky.length) {
  console.log("\nflaky tests (failed, then passed on their retry):");
  for (const f of flaky) console.log(`  ${f}`);
}
if (failures.length) {
  console.log("\nfailed tests:");
  for (const f of failures) console.log(`  ${f}`);
}
console.log(
  `\n${passed} passed, ${failedTests} failed${flaky.length ? ` (${flaky.length} passed on a retry)` : ""}`,
);
if (failed) {
  console.error(`${failed} step(s) failed`);
  process.exit(1);
}
