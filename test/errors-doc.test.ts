// docs/errors.md lists every code the API can answer, with the status the code table gives it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { API_ERRORS } from "../shared/errors.ts";

const doc = readFileSync(join(import.meta.dirname, "..", "docs", "errors.md"), "utf8");

/** code -> status from the API table (the section between "## API" and the next "## "). */
function documentedApiCodes(): Record<string, number> {
  const section = doc.split(/^## /m).find((s) => s.startsWith("API"));
  if (!section) throw new Error("docs/errors.md has no '## API' section");
  const rows: Record<string, number> = {};
  for (const line of section.split("\n")) {
    const m = /^\|[^|]*`(E_[A-Z0-9_]+)`[^|]*\|\s*(\d{3})\s*\|/.exec(line);
    if (m) rows[m[1]!] = Number(m[2]);
  }
  return rows;
}

describe("docs/errors.md", () => {
  it("lists every API error code with the status of shared/errors.ts, and nothing else", () => {
    expect(documentedApiCodes()).toEqual({ ...API_ERRORS });
  });

  it("gives every API code the anchor its error body's `docs` link points at", () => {
    for (const code of Object.keys(API_ERRORS))
      expect(doc, code).toContain(`<a id="${code.toLowerCase()}"></a>`);
  });
});
