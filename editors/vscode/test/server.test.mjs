// The client side of the protocol against the real server: the command the
// documented setting gives (`${workspaceFolder}/.venv/bin/tideflow lsp`, run
// through out/command.js as the extension does), spoken to over stdio with the
// JSON-RPC library that the extension ships. Skipped, with a message, when the
// repository has no .venv with tideflow in it (`make test` makes one).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
const { resolveServerCommand } = require("../out/command.js");
const rpc = require("vscode-languageserver-protocol/node");

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const { command, args } = resolveServerCommand(
  ["${workspaceFolder}/.venv/bin/tideflow", "lsp"],
  root,
  "",
);
const missing = fs.existsSync(command) ? false : `no ${command}: run \`make test\` to create the .venv`;

test("a misspelt reference gets E207 from `tideflow lsp` over stdio", { skip: missing, timeout: 60_000 }, async () => {
  const server = spawn(command, args, { cwd: root, stdio: ["pipe", "pipe", "inherit"] });
  const connection = rpc.createProtocolConnection(
    new rpc.StreamMessageReader(server.stdout),
    new rpc.StreamMessageWriter(server.stdin),
  );
  try {
    const file = path.join(root, "examples", "quickstart.flow");
    const uri = pathToFileURL(file).href;
    const text = fs.readFileSync(file, "utf8").replace("after       = [job.supply]", "after       = [job.suply]");
    assert.match(text, /job\.suply/);
    const diagnostics = new Promise((resolve) => {
      connection.onNotification(rpc.PublishDiagnosticsNotification.type, (params) => {
        if (params.uri === uri && params.diagnostics.length > 0) resolve(params.diagnostics);
      });
    });
    connection.listen();
    const init = await connection.sendRequest(rpc.InitializeRequest.type, {
      processId: process.pid,
      rootUri: pathToFileURL(root).href,
      capabilities: {},
      workspaceFolders: null,
    });
    assert.ok(init.capabilities.textDocumentSync, "the server syncs documents");
    await connection.sendNotification(rpc.InitializedNotification.type, {});
    await connection.sendNotification(rpc.DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: "flow", version: 1, text },
    });
    const received = await diagnostics;
    const e207 = received.find((d) => d.code === "E207");
    assert.ok(e207, `E207 among ${JSON.stringify(received.map((d) => d.code))}`);
    const line = text.split("\n")[e207.range.start.line];
    assert.equal(line.slice(e207.range.start.character, e207.range.end.character), "job.suply");
    await connection.sendRequest(rpc.ShutdownRequest.type);
    const exited = new Promise((resolve) => server.once("exit", resolve));
    await connection.sendNotification(rpc.ExitNotification.type);
    assert.equal(await exited, 0);
  } finally {
    connection.dispose();
    server.kill();
  }
});
