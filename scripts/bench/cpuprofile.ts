/** Summaries of V8 .cpuprofile files (node --cpu-prof): where the CPU time went, by area and by function. */
import { readFileSync } from 'node:fs';

interface ProfNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** busy (non-idle) CPU time covered by the profile, ms */
  busy_ms: number;
  /** share of busy time by area of the code, percent */
  areas: Record<string, number>;
  /** heaviest functions by self time: "name file:line pct%" */
  top: string[];
}

/** Pure: which part of the program a frame belongs to. */
export function areaOf(url: string, fn: string): string {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'gc';
  if (fn === '(program)') return 'native (program)';
  if (url.startsWith('wasm://') || url.includes('libsodium') || url.includes('sodium-native')) return 'libsodium';
  if (url.includes('@ronomon/crypto-async')) return 'openssl AEAD';
  const m = url.match(/\/dist\/(src\/[a-z]+|peer|relay|rendezvous|scripts)\//);
  if (m) return m[1];
  if (url.includes('node_modules/pino') || url.includes('thread-stream') || url.includes('sonic-boom'))
    return 'logging';
  if (url.includes('node_modules/zod')) return 'zod';
  if (url.startsWith('node:')) {
    const mod = url.slice(5).replace(/^internal\//, '');
    if (/^(net|stream|streams\/|tls|stream_base_commons)/.test(mod)) return 'node net/streams';
    if (/^dgram/.test(mod)) return 'node dgram';
    if (/^(timers|process\/task_queues)/.test(mod)) return 'node timers/ticks';
    return `node ${mod.split('/')[0]}`;
  }
  if (url === '') return fn ? `native: ${fn}` : 'native';
  return 'other';
}

function short(url: string): string {
  const i = url.indexOf('/dist/');
  if (i >= 0) return url.slice(i + 6);
  const n = url.indexOf('node_modules/');
  if (n >= 0) return url.slice(n + 13);
  return url.replace(/^file:\/\//, '');
}

export function summarizeProfile(file: string, topN = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i];
    self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0));
  }
  const areas = new Map<string, number>();
  const fns = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    const area = areaOf(url, functionName);
    if (area === 'idle') continue;
    busy += us;
    areas.set(area, (areas.get(area) ?? 0) + us);
    const key = `${functionName || '(anonymous)'} ${url ? `${short(url)}:${lineNumber + 1}` : ''}`.trim();
    fns.set(key, (fns.get(key) ?? 0) + us);
  }
  const pct = (us: number) => Math.round((us / busy) * 1000) / 10;
  return {
    busy_ms: Math.round(busy / 1000),
    areas: Object.fromEntries([...areas].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, pct(v)])),
    top: [...fns]
      .sort((a, b) => b[1] - a[1])
      .slice(0, topN)
      .map(([k, v]) => `${pct(v)}% ${k}`),
  };
}
