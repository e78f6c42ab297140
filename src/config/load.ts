import { CodedError } from '../util/errors.js';
import fs from 'node:fs';
import { parse, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { keyLines, lineOf } from './lines.js';

/** A config problem, already phrased for the user: `FILE:LINE: key "a.b": what is wrong`. */
export class ConfigError extends CodedError {
  constructor(
    message: string,
    readonly file: string,
    readonly line?: number,
    readonly key?: string,
  ) {
    super('config', message);
  }
}

/** Reads and validates a TOML config file; throws ConfigError naming the file, line and key. */
export function loadConfigFile<S extends z.ZodType>(file: string, schema: S): z.infer<S> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(
      `cannot read config file ${file}: ${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)}`,
      file,
    );
  }
  return parseConfig(text, schema, file);
}

/** Parses TOML text against `schema`; `file` only names the source in messages. */
export function parseConfig<S extends z.ZodType>(text: string, schema: S, file = 'config'): z.infer<S> {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    if (e instanceof TomlError) {
      // smol-toml's message ends with a code frame; the first line is the reason.
      const reason = e.message.split('\n')[0].replace(/^Invalid TOML document: /, '');
      throw new ConfigError(`${file}:${e.line}: invalid TOML: ${reason}`, file, e.line);
    }
    throw new ConfigError(`${file}: invalid TOML: ${(e as Error).message}`, file);
  }
  const r = schema.safeParse(doc);
  if (r.success) return r.data;
  const lines = keyLines(text);
  // An unknown key usually explains the "missing" one next to it (a typo), so it goes first.
  const issue = [...r.error.issues].sort(
    (a, b) => Number(b.code === 'unrecognized_keys') - Number(a.code === 'unrecognized_keys'),
  )[0];
  let path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  let what = issue.message.charAt(0).toLowerCase() + issue.message.slice(1);
  if (issue.code === 'unrecognized_keys') {
    path = [...path, issue.keys[0]];
    what = 'unknown key';
  } else if (valueAt(doc, path) === undefined) {
    what = 'missing (required)';
  } else if (issue.code === 'invalid_type') {
    what = `expected ${issue.expected}, got ${describe(valueAt(doc, path))}`;
  }
  const line = lineOf(lines, path);
  const key = displayKey(path);
  throw new ConfigError(`${file}${line ? `:${line}` : ''}: key "${key}": ${what}`, file, line, key);
}

/** `serve.1.local` -> `serve[1].local`, the way a person reads a TOML array of tables. */
export function displayKey(path: readonly (string | number)[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${p}` : p;
  return s || '(top level)';
}

function valueAt(doc: unknown, path: readonly (string | number)[]): unknown {
  let v: unknown = doc;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a table';
  return `${typeof v} ${JSON.stringify(v)}`;
}
