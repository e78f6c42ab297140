import type { Command } from 'commander';

/**
 * Where an option's value comes from, most specific first:
 *
 *   command-line flag > the entry's own key in the file > environment variable
 *   > the file's top level > built-in default
 *
 * An exported PEER_SECRET (handy for ssh) thus fills in for entries that set
 * no secret of their own, but never overrides one written for a specific entry.
 * Commander records the source of each value; we only re-order them.
 */
export function layered<T>(cmd: Command, key: string, file: { entry?: T; top?: T } = {}): T | undefined {
  const source = cmd.getOptionValueSource(key);
  const value = cmd.getOptionValue(key) as T | undefined;
  if (source === 'cli') return value;
  if (file.entry !== undefined) return file.entry;
  // An exported but empty variable (PEER_SECRET=) means "not set", not "empty secret".
  if (source === 'env' && value !== '') return value;
  if (file.top !== undefined) return file.top;
  return source === 'env' ? undefined : value;
}

/** True when the user typed the flag (not a default or an environment variable). */
export function fromCommandLine(cmd: Command, key: string): boolean {
  return cmd.getOptionValueSource(key) === 'cli';
}
