// The server command of src/command.ts, from its compiled out/command.js.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createRequire } from "node:module";

const { resolveServerCommand } = createRequire(import.meta.url)("../out/command.js");

test("the default command is `tideflow lsp`", () => {
  assert.deepEqual(resolveServerCommand(undefined, "/w", "/h"), { command: "tideflow", args: ["lsp"] });
});

test("a list setting gives the program and its arguments, expanded", () => {
  assert.deepEqual(
    resolveServerCommand(["${workspaceFolder}/.venv/bin/tideflow", "lsp", "--x=${workspaceFolder}"], "/w$&", "/h"),
    { command: "/w$&/.venv/bin/tideflow", args: ["lsp", "--x=/w$&"] },
  );
  assert.deepEqual(resolveServerCommand(["~/bin/tideflow", "lsp", "a~"], "/w", "/h"), {
    command: "/h/bin/tideflow",
    args: ["lsp", "a~"],
  });
});

test("an empty list, a string or a list with a non-string falls back to the default", () => {
  for (const setting of [[], "tideflow lsp", ["tideflow", 3], [""]]) {
    assert.deepEqual(resolveServerCommand(setting, "/w", "/h"), { command: "tideflow", args: ["lsp"] });
  }
});
