import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A getter for an optional native addon, loaded on first use and cached:
 * the module if it loads and `usable` accepts it, else null (not installed,
 * no build for this platform, or a check failed). `PEER_…=0` in the named
 * environment variable forces null, to compare or test the fallback.
 */
export function optionalAddon<T>(name: string, disableVar: string, usable: (m: Partial<T>) => boolean): () => T | null {
  let loaded: T | null | undefined;
  return () => {
    if (loaded !== undefined) return loaded;
    loaded = null;
    if (process.env[disableVar] === '0') return loaded;
    try {
      const m = require(name) as Partial<T>;
      if (usable(m)) loaded = m as T;
    } catch {
      // Missing or unloadable: the caller's fallback does the work.
    }
    return loaded;
  };
}
