// Snapshot tests of the grammar over every example flow of the repository.
//
// Each examples/**/*.flow is tokenized by vscode-tmgrammar-snap (the real
// vscode-textmate) and compared with its committed snapshot under
// test/examples/. The examples are copied to a temporary folder first because
// the tool writes its .snap beside the file it reads, and examples/ is not
// ours to write into. Fails when an example has no snapshot (the tool would
// silently create one), when a snapshot has no example, or when a visible
// character of an example gets no scope of its own (plain `source.flow`).
//
//   node test/examples.mjs            check
//   node test/examples.mjs --update   rewrite the snapshots after a change

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const extension = path.dirname(here);
const examples = path.resolve(extension, "..", "..", "examples");
const snapshots = path.join(here, "examples");
const update = process.argv.includes("--update");

function flowsUnder(root, dir = "") {
  const found = [];
  for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...flowsUnder(root, rel));
    else if (entry.name.endsWith(".flow")) found.push(rel);
  }
  return found.sort();
}

// A snapshot line `#  ^^^ source.flow` marks characters of the source line above
// it that carry no scope but the grammar's own.
function unscoped(snap) {
  const problems = [];
  let source = "";
  let number = 0;
  for (const line of snap.split("\n")) {
    if (line.startsWith(">")) {
      source = line.slice(1);
      number += 1;
      continue;
    }
    const mark = /^#(\s*)(\^+) (.*)$/.exec(line);
    if (!mark || mark[3].trim() !== "source.flow") continue;
    const start = mark[1].length; // `>` and `#` both take column 0
    const text = source.slice(start, start + mark[2].length);
    if (text.trim() !== "") problems.push(`line ${number}: ${JSON.stringify(text)} has no scope`);
  }
  return problems;
}

const flows = flowsUnder(examples);
if (flows.length === 0) {
  console.error(`no example flows under ${examples}`);
  process.exit(1);
}
const failures = [];
const work = fs.mkdtempSync(path.join(os.tmpdir(), "tideflow-grammar-"));
try {
  for (const rel of flows) {
    fs.mkdirSync(path.join(work, path.dirname(rel)), { recursive: true });
    fs.copyFileSync(path.join(examples, rel), path.join(work, rel));
    const snap = path.join(snapshots, rel + ".snap");
    if (fs.existsSync(snap)) fs.copyFileSync(snap, path.join(work, rel + ".snap"));
    else if (!update) failures.push(`examples/${rel} has no snapshot: run \`npm run update-snapshots\``);
  }
  const stale = fs.existsSync(snapshots)
    ? listSnaps(snapshots).filter((rel) => !flows.includes(rel.slice(0, -".snap".length)))
    : [];
  for (const rel of stale) {
    if (update) fs.rmSync(path.join(snapshots, rel));
    else failures.push(`test/examples/${rel} belongs to no example: run \`npm run update-snapshots\``);
  }
  const tool = path.join(extension, "node_modules", ".bin", "vscode-tmgrammar-snap");
  const args = ["--config", path.join(extension, "package.json"), path.join(work, "**", "*.flow")];
  if (update) args.unshift("--updateSnapshot");
  const run = spawnSync(tool, args, { stdio: "inherit" });
  if (run.status !== 0) failures.push(`vscode-tmgrammar-snap exited with ${run.status ?? run.signal}`);
  for (const rel of flows) {
    const produced = path.join(work, rel + ".snap");
    if (!fs.existsSync(produced)) continue;
    const text = fs.readFileSync(produced, "utf8");
    for (const problem of unscoped(text)) failures.push(`examples/${rel} ${problem}`);
    if (update) {
      fs.mkdirSync(path.dirname(path.join(snapshots, rel)), { recursive: true });
      fs.copyFileSync(produced, path.join(snapshots, rel + ".snap"));
    }
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}

function listSnaps(root, dir = "") {
  const found = [];
  for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listSnaps(root, rel));
    else if (entry.name.endsWith(".snap")) found.push(rel);
  }
  return found;
}

if (failures.length > 0) {
  for (const failure of failures) console.error(`✖ ${failure}`);
  process.exit(1);
}
console.log(`✓ ${flows.length} example flows tokenize as their snapshots say`);
