// Folding on braces and brackets, and on block comments, of a .flow text.
//
// VS Code folds by indentation unless a provider says otherwise; a flow is
// folded where its blocks, maps and lists open and close, whatever the
// indentation. Kept free of the `vscode` module so that node can test it.

/** A foldable region: the lines (0-based) of its opening and closing lines. */
export interface Fold {
  readonly start: number;
  readonly end: number;
  readonly comment: boolean;
}

/**
 * The regions between `{`/`}` and `[`/`]` that span lines, and multi-line
 * block comments. Brackets inside strings and comments do not count; an
 * unclosed bracket folds nothing.
 */
export function foldingRegions(text: string): Fold[] {
  const folds: Fold[] = [];
  const open: number[] = [];
  let line = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const next = text[i + 1];
    if (c === "\n") {
      line += 1;
    } else if (c === "#" || (c === "/" && next === "/")) {
      while (i < text.length && text[i] !== "\n") i += 1;
      continue;
    } else if (c === "/" && next === "*") {
      const start = line;
      i += 2;
      while (i < text.length && !(text[i] === "*" && text[i + 1] === "/")) {
        if (text[i] === "\n") line += 1;
        i += 1;
      }
      if (line > start) folds.push({ start, end: line, comment: true });
      i += 2;
      continue;
    } else if (c === '"') {
      // A string ends at its closing quote or, unterminated, at the line's end.
      i += 1;
      while (i < text.length && text[i] !== '"' && text[i] !== "\n") {
        i += text[i] === "\\" ? 2 : 1;
      }
      if (text[i] === '"') i += 1;
      continue;
    } else if (c === "{" || c === "[") {
      open.push(line);
    } else if (c === "}" || c === "]") {
      const start = open.pop();
      // The closing line stays visible, as VS Code does for its own languages.
      if (start !== undefined && line - 1 > start) {
        folds.push({ start, end: line - 1, comment: false });
      }
    }
    i += 1;
  }
  return folds.sort((a, b) => a.start - b.start || b.end - a.end);
}
