import { describe, expect, it } from "vitest";
import { heapGrowth } from "./heap.ts";

describe("the relay's heap growing factor", () => {
  it("is set while tunnels are open and handed back to V8 when the last closes, once per change", () => {
    const set: string[] = [];
    const growth = heapGrowth(100, (flags) => void set.push(flags));
    growth.update(0);
    expect(set).toEqual([]);
    for (const open of [1, 2, 3, 2, 1]) growth.update(open);
    expect(set).toEqual(["--heap-growing-percent=100"]);
    growth.update(0);
    expect(set).toEqual(["--heap-growing-percent=100", "--heap-growing-percent=0"]);
    growth.update(1);
    expect(set).toHaveLength(3);
  });

  it("with 0, leaves V8 its own factor whatever is open", () => {
    const set: string[] = [];
    const growth = heapGrowth(0, (flags) => void set.push(flags));
    for (const open of [1, 5, 0, 3]) growth.update(open);
    expect(set).toEqual([]);
  });
});
