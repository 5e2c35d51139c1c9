// `npm start`'s entry: plain JavaScript, so that any Node can read it and say what to do when it is
// too old to load the TypeScript launcher itself (dev/stack.ts). The system Node of a fresh machine
// is often 20, which fails on `.ts` with an unhelpful ERR_UNKNOWN_FILE_EXTENSION.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  console.error(
    `[stack] this is Node ${process.versions.node}; the launcher needs Node >= 22.12 (TypeScript without a build step).\n` +
      "[stack] run `npm start`: it installs Node 22 into node_modules (bootstrap) and runs the launcher with it.\n" +
      "[stack] (or directly: node_modules/.bin/node dev/stack.ts)",
  );
  process.exit(1);
}
// Ctrl-C while the launcher is still loading (nothing started yet): exit cleanly. Once it has
// loaded, its own handlers stop what it started; this one then steps aside.
const early = () => {
  if (process.listenerCount("SIGINT") + process.listenerCount("SIGTERM") > 2) return;
  process.exit(0);
};
process.on("SIGINT", early);
process.on("SIGTERM", early);
await import("./stack.ts");
process.off("SIGINT", early);
process.off("SIGTERM", early);
