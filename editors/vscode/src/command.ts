// The language server's command line, from the `tideflow.server.command`
// setting. Kept free of the `vscode` module so that node can test it.

/** The command VS Code starts when the setting is absent or unusable. */
export const DEFAULT_COMMAND: readonly string[] = ["tideflow", "lsp"];

/** A program and its arguments, as given to child_process.spawn. */
export interface ServerCommand {
  readonly command: string;
  readonly args: string[];
}

/**
 * The program and arguments of `setting` (a non-empty list of non-empty
 * strings, else DEFAULT_COMMAND), with `${workspaceFolder}` replaced by
 * `folder` and a leading `~` by `home`.
 */
export function resolveServerCommand(
  setting: unknown,
  folder: string,
  home: string,
): ServerCommand {
  const valid =
    Array.isArray(setting) &&
    setting.length > 0 &&
    setting.every((part) => typeof part === "string" && part.length > 0);
  const parts = (valid ? setting : DEFAULT_COMMAND) as readonly string[];
  const expanded = parts.map((part) =>
    part
      // A function replacement: `$` in a folder's name stays literal.
      .replace(/\$\{workspaceFolder\}/g, () => folder)
      .replace(/^~(?=\/|\\|$)/, () => home),
  );
  return { command: expanded[0], args: expanded.slice(1) };
}
