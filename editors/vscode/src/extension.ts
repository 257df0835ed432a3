// The VS Code side of tideflow: starts `tideflow lsp` over stdio for .flow
// files and folds them on their braces. Everything else (diagnostics,
// completion, hover, rename, formatting, quick fixes) comes from the server.

import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
} from "vscode-languageclient/node";
import { resolveServerCommand, ServerCommand } from "./command";
import { foldingRegions } from "./folding";

let client: LanguageClient | undefined;

/** The server's command line from the settings of the first workspace folder. */
function serverCommand(): ServerCommand {
  const setting = vscode.workspace
    .getConfiguration("tideflow")
    .get<unknown>("server.command");
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? "";
  const home = process.env.HOME ?? process.env.USERPROFILE ?? "";
  return resolveServerCommand(setting, folder, home);
}

function createClient(): LanguageClient {
  const { command, args } = serverCommand();
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const serverOptions: ServerOptions = {
    command,
    // No `transport`: the client then talks over the process's stdin and
    // stdout as they are, where TransportKind.stdio would append `--stdio`.
    args,
    // The server resolves includes and plugins as the CLI does, from the project.
    options: folder ? { cwd: folder } : undefined,
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { scheme: "file", language: "flow" },
      { scheme: "untitled", language: "flow" },
    ],
    synchronize: {
      // An included file changed on disk: its includers' diagnostics change.
      fileEvents: vscode.workspace.createFileSystemWatcher("**/*.flow"),
    },
  };
  return new LanguageClient(
    "tideflow",
    "tideflow",
    serverOptions,
    clientOptions,
  );
}

async function startClient(): Promise<void> {
  client = createClient();
  try {
    await client.start();
  } catch (error) {
    const { command, args } = serverCommand();
    const shown = [command, ...args].join(" ");
    void vscode.window.showErrorMessage(
      `tideflow: could not start the language server \`${shown}\` (${String(error)}). ` +
        "Install tideflow, or point the setting tideflow.server.command at it.",
    );
  }
}

async function stopClient(): Promise<void> {
  const running = client;
  client = undefined;
  if (running?.isRunning()) {
    await running.stop();
  }
}

/** Starts the server, and restarts it when its command changes. */
export async function activate(context: vscode.ExtensionContext): Promise<void> {
  context.subscriptions.push(
    vscode.languages.registerFoldingRangeProvider(
      { language: "flow" },
      {
        provideFoldingRanges(document) {
          return foldingRegions(document.getText()).map(
            (fold) =>
              new vscode.FoldingRange(
                fold.start,
                fold.end,
                fold.comment ? vscode.FoldingRangeKind.Comment : undefined,
              ),
          );
        },
      },
    ),
    vscode.commands.registerCommand("tideflow.restartServer", async () => {
      await stopClient();
      await startClient();
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("tideflow.server.command")) {
        await stopClient();
        await startClient();
      }
    }),
    { dispose: () => void stopClient() },
  );
  await startClient();
}

/** Stops the server; VS Code waits for the returned promise. */
export function deactivate(): Promise<void> {
  return stopClient();
}
