/**
 * Finds the line where each key of a TOML document is written, so a schema
 * error can point at it. The parser already checked the syntax, so this scan
 * only has to follow headers (`[a.b]`, `[[a]]`) and `key = value` lines; it
 * skips the bodies of multi-line strings, whose lines may look like keys.
 *
 * Paths are dot-joined with array indexes: `serve.1.local`.
 */
export function keyLines(source: string): Map<string, number> {
  const out = new Map<string, number>();
  const arrayCounts = new Map<string, number>();
  let table: string[] = [];
  let inMultiline: string | null = null;
  const lines = source.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i];
    if (inMultiline) {
      if (countOf(line, inMultiline) % 2 === 1) inMultiline = null;
      continue;
    }
    line = line.trim();
    if (!line || line.startsWith('#')) continue;
    const arr = /^\[\[\s*(.+?)\s*\]\]/.exec(line);
    if (arr) {
      const name = splitKey(arr[1]).join('.');
      const n = arrayCounts.get(name) ?? 0;
      arrayCounts.set(name, n + 1);
      table = [...splitKey(arr[1]), String(n)];
      setOnce(out, table.join('.'), lineNo);
      setOnce(out, name, lineNo);
      continue;
    }
    const tbl = /^\[\s*(.+?)\s*\]/.exec(line);
    if (tbl) {
      table = splitKey(tbl[1]);
      setOnce(out, table.join('.'), lineNo);
      continue;
    }
    const eq = findEquals(line);
    if (eq < 0) continue;
    const key = splitKey(line.slice(0, eq));
    if (!key.length) continue;
    const path = [...table, ...key].join('.');
    setOnce(out, path, lineNo);
    const value = line.slice(eq + 1).trim();
    for (const q of ['"""', "'''"]) {
      if (value.startsWith(q) && countOf(value, q) === 1) inMultiline = q;
    }
  }
  return out;
}

/** The line of `path`, or of its nearest ancestor that is written in the file. */
export function lineOf(lines: Map<string, number>, path: readonly (string | number)[]): number | undefined {
  for (let n = path.length; n > 0; n--) {
    const l = lines.get(path.slice(0, n).join('.'));
    if (l !== undefined) return l;
  }
  return undefined;
}

function setOnce(m: Map<string, number>, k: string, v: number): void {
  if (!m.has(k)) m.set(k, v);
}

function countOf(s: string, needle: string): number {
  let n = 0;
  for (let i = s.indexOf(needle); i >= 0; i = s.indexOf(needle, i + needle.length)) n++;
  return n;
}

/** Index of the `=` that ends a key, outside quotes; -1 when the line is not `key = ...`. */
function findEquals(line: string): number {
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '=') return i;
    else if (!/[A-Za-z0-9_.\- \t]/.test(c)) return -1;
  }
  return -1;
}

/** Splits a possibly dotted, possibly quoted key: `a."b.c".d` -> [a, b.c, d]. */
function splitKey(text: string): string[] {
  const parts: string[] = [];
  let cur = '';
  let quote: string | null = null;
  for (const c of text.trim()) {
    if (quote) {
      if (c === quote) quote = null;
      else cur += c;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '.') {
      parts.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  parts.push(cur.trim());
  return parts.filter((p) => p.length > 0);
}
