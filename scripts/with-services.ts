// Runs a command with throwaway state services in its env (for running one test file by hand):
//   node scripts/with-services.ts npx vitest run dev/stand-ins.test.ts
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { killAllNow } from "../dev/proc.ts";
import { runCommand } from "../dev/run.ts";
import { startStateServices } from "../dev/services.ts";

const [cmd, ...args] = process.argv.slice(2);
if (!cmd) {
  console.error("usage: node scripts/with-services.ts <command> [args...]");
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), "peerproxy-run-"));
process.on("exit", killAllNow);
const services = await startStateServices({ dir });
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => void services.stop().finally(() => process.exit(130)));
const code = await runCommand(cmd, args, { env: { ...services.env, PEERPROXY_TEST_TMP: dir } });
await services.stop();
rmSync(dir, { recursive: true, force: true });
process.exit(code);
