import fs from 'node:fs';
import { PROTOCOL_VERSION } from '../wire/frame.js';

/**
 * The package version (from package.json, found relative to this module both
 * in the repository's dist/ and in an installed package) and the protocol
 * version this build speaks, for `--version` on every program.
 */
export function packageVersion(): string {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(fs.readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'holepunch-tunnel' && pkg.version) return pkg.version;
    } catch {
      // try the next place
    }
  }
  return 'unknown';
}

/** `peer 0.1.0 (protocol 1)`: what `--version` prints. */
export function versionLine(program: string): string {
  return `${program} ${packageVersion()} (protocol ${PROTOCOL_VERSION})`;
}
