import { z } from 'zod';
import { ControlMessage } from '../../src/wire/control.js';

/**
 * Messages between nodes, carried by Redis pub/sub on each node's channel
 * (`holepunch:bus:<node>`). Fire-and-forget on purpose: everything here is
 * part of a request the visitor will retry (connect) or state that is
 * re-derived (sessions end when either side goes away), so losing a message
 * while a node or Redis restarts costs a retry, never a wrong answer.
 * Parsed with zod like every other boundary: Redis is shared state.
 */

const node = z.string().min(1).max(64);
/** A visitor connection, numbered by the node it is connected to. */
const v = z.number().int().min(0);

export const BusMessage = z.discriminatedUnion('t', [
  // visitor's node -> owning node: broker this connect for visitor `v` of node `from`.
  z.object({
    t: z.literal('connect'),
    from: node,
    v,
    addr: z.string().max(80),
    rtt: z.number().nullable(),
    m: ControlMessage,
  }),
  // owning node -> visitor's node: hand `m` (connected, error,
  // punch) to visitor `v`. `relay`: where its relay leg goes.
  z.object({ t: z.literal('deliver'), from: node, v, m: ControlMessage, relay: z.string().max(300).optional() }),
  // visitor's node -> owning node: visitor `v` sent candidates / path_report for a session brokered there.
  z.object({ t: z.literal('visitor'), from: node, v, m: ControlMessage }),
  // visitor's node -> owning node: visitor `v` disconnected.
  z.object({ t: z.literal('gone'), from: node, v }),
  // new owner -> previous owner: registration `reg` of `name` was replaced (by the same key: the serve moved).
  z.object({ t: z.literal('moved'), from: node, name: z.string().max(64), reg: z.string().max(64) }),
]);
export type BusMessage = z.infer<typeof BusMessage>;

/** Parses one bus payload; null for anything malformed (never throws). */
export function parseBus(text: string): BusMessage | null {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return null;
  }
  const r = BusMessage.safeParse(json);
  return r.success ? r.data : null;
}

export function encodeBus(m: BusMessage): string {
  return JSON.stringify(m);
}
