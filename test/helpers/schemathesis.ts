// Schemathesis (PyPI), the property-based OpenAPI fuzzer, installed on first use into a venv under
// node_modules/.cache (gone with node_modules, like every other dependency). Needs python3 + venv.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Pinned: a new release may add checks; bump it on purpose and fix what it finds. */
export const SCHEMATHESIS_VERSION = "4.32.5";

const root = join(import.meta.dirname, "..", "..");
const cache = join(root, "node_modules", ".cache");
const venv = join(cache, `schemathesis-${SCHEMATHESIS_VERSION}`);

/** The python that runs `-m schemathesis.cli`; installs it first when missing (~15 s). */
export async function schemathesisPython(): Promise<string> {
  const python = join(venv, "bin", "python");
  if (existsSync(join(venv, ".complete"))) return python;
  mkdirSync(cache, { recursive: true });
  // Built aside and renamed into place, so two runs never see a half-installed venv. `-m` keeps
  // the venv working after the rename (its scripts' shebangs would still name the old path).
  const building = mkdtempSync(join(cache, "schemathesis-build-"));
  try {
    await run("python3", ["-m", "venv", building]).catch((err) => {
      throw new Error(
        `python3 -m venv failed (${(err as Error).message.trim()}): install python3 and python3-venv`,
      );
    });
    await run(
      join(building, "bin", "python"),
      [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        `schemathesis==${SCHEMATHESIS_VERSION}`,
      ],
      { timeout: 300_000 },
    );
    await run(join(building, "bin", "python"), [
      "-c",
      `open(${JSON.stringify(join(building, ".complete"))}, "w")`,
    ]);
    try {
      renameSync(building, venv);
    } catch {
      if (!existsSync(join(venv, ".complete")))
        throw new Error(`could not install schemathesis into ${venv}`);
    }
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
  return python;
}
