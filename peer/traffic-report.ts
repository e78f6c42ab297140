import type { Session } from '../src/session/session.js';
import type { ControlClient } from './control-client.js';

/** A visitor repeats its path report this often while its session carries traffic (the dashboard's rates). */
export const TRAFFIC_REPORT_MS = 5000;

/** What a path report adds about traffic: where the active path goes and the sealed bytes by path kind. */
export function trafficFields(session: Session): {
  remote?: string;
  bytes: { relay: number; direct: number };
} {
  const b = session.pathBytes;
  const path = session.path;
  return {
    ...(path && !path.closed ? { remote: path.remote.slice(0, 64) } : {}),
    bytes: { relay: b.relay.in + b.relay.out, direct: b.direct.in + b.direct.out },
  };
}

/**
 * Every TRAFFIC_REPORT_MS, while the session is open on a path and its
 * application bytes moved since the last report, sends the path report again
 * with the byte counts. An idle session sends nothing. Only to a rendezvous
 * that lists `path_report` in its features (an older one strips the new fields).
 */
export function startTrafficReports(session: Session, control: ControlClient): void {
  let last = -1;
  const timer = setInterval(() => {
    const path = session.path;
    if (session.closed || !path || path.closed || control.isClosed) return;
    if (!control.welcome?.features?.includes('path_report')) return;
    const moved = session.mux.bytesSent + session.mux.bytesReceived;
    if (moved === last) return;
    last = moved;
    control.send({ type: 'path_report', sid: session.sid, path: path.kind, ...trafficFields(session) });
  }, TRAFFIC_REPORT_MS);
  timer.unref();
  session.once('close', () => clearInterval(timer));
}
