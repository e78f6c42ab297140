/**
 * The name registry: which control connection serves which name. A name
 * belongs to the key that registered it while that registration is alive; the
 * same key may take it over (a serve that reconnects before we noticed its old
 * connection died), any other key is refused.
 */
export interface Registration<C> {
  name: string;
  key: string;
  conn: C;
  since: number;
}

export type ClaimResult<C> = { ok: true; replaced?: Registration<C> } | { ok: false; holderSince: number };

export class Registry<C> {
  private byName = new Map<string, Registration<C>>();
  /** The names each connection holds (lowercased): a connection's close costs its own names, not the registry's. */
  private byConn = new Map<C, Set<string>>();

  private index(conn: C, k: string, add: boolean): void {
    let set = this.byConn.get(conn);
    if (add) {
      if (!set) this.byConn.set(conn, (set = new Set()));
      set.add(k);
    } else if (set) {
      set.delete(k);
      if (set.size === 0) this.byConn.delete(conn);
    }
  }

  get size(): number {
    return this.byName.size;
  }

  lookup(name: string): Registration<C> | undefined {
    return this.byName.get(name.toLowerCase());
  }

  claim(name: string, key: string, conn: C, now = Date.now()): ClaimResult<C> {
    const k = name.toLowerCase();
    const cur = this.byName.get(k);
    if (cur && cur.key !== key) return { ok: false, holderSince: cur.since };
    if (cur) this.index(cur.conn, k, false);
    this.byName.set(k, { name, key, conn, since: now });
    this.index(conn, k, true);
    return cur && cur.conn !== conn ? { ok: true, replaced: cur } : { ok: true };
  }

  /** Drops `name` if `conn` holds it (the cluster moved it elsewhere); true when dropped. */
  release(name: string, conn: C): boolean {
    const k = name.toLowerCase();
    if (this.byName.get(k)?.conn !== conn) return false;
    this.byName.delete(k);
    this.index(conn, k, false);
    return true;
  }

  /** Drops every name held by `conn`; returns the names released. */
  releaseConn(conn: C): string[] {
    const out: string[] = [];
    for (const k of this.byConn.get(conn) ?? []) {
      const r = this.byName.get(k);
      if (r?.conn !== conn) continue;
      this.byName.delete(k);
      out.push(r.name);
    }
    this.byConn.delete(conn);
    return out;
  }

  names(): Registration<C>[] {
    return [...this.byName.values()];
  }
}
