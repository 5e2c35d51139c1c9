/**
 * `--@include lib/<name>.lua` lines in shared/lua/*.lua: Redis scripts cannot load each other, so
 * helpers several scripts need live once in shared/lua/lib/ and are inlined by scripts/gen-lua.ts.
 * One level only: a library may not include another.
 */
export function expandIncludes(file: string, text: string, readLib: (lib: string) => string): string {
  return text.replace(/^--@include (lib\/[a-z0-9_]+\.lua)[ \t]*$/gm, (_, lib: string) => {
    const body = readLib(lib);
    if (/^--@include /m.test(body)) throw new Error(`${lib} (included by ${file}) may not include others`);
    return body.trimEnd();
  });
}
