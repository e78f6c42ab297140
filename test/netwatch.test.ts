import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { NetWatch } from '../src/util/netwatch.js';
import { sleep } from '../src/util/backoff.js';

/** os.networkInterfaces() as a host with `addresses` on eth0, counting the calls. */
function fakeInterfaces(addresses: () => string[]): { calls: () => number; restore: () => void } {
  const real = os.networkInterfaces;
  let calls = 0;
  os.networkInterfaces = () => {
    calls++;
    return {
      eth0: addresses().map((address) => ({
        address,
        netmask: '255.255.255.0',
        family: 'IPv4' as const,
        mac: '00:00:00:00:00:01',
        internal: false,
        cidr: `${address}/24`,
      })),
    };
  };
  return { calls: () => calls, restore: () => (os.networkInterfaces = real) };
}

test('netwatch: 50 watchers in one process share one poll, and each hears a change', async () => {
  let addrs = ['192.168.1.10'];
  const f = fakeInterfaces(() => addrs);
  const watchers = Array.from({ length: 50 }, () => new NetWatch(20));
  const seen: Array<[string[], string[]]> = [];
  try {
    for (const w of watchers) {
      w.on('change', (added: string[], removed: string[]) => seen.push([added, removed]));
      w.start();
    }
    const before = f.calls();
    await sleep(200);
    const polls = f.calls() - before;
    assert.ok(polls >= 3 && polls <= 15, `${polls} polls in 200 ms at 20 ms for 50 watchers`);
    const added = watchers[0].addressAdded;
    addrs = ['10.0.0.7'];
    await sleep(100);
    assert.equal(seen.length, 50, 'every watcher heard the change once');
    assert.deepEqual(seen[0], [['10.0.0.7'], ['192.168.1.10']]);
    await added; // settled by the change that added an address
    for (const w of watchers) w.stop();
    const stopped = f.calls();
    await sleep(100);
    assert.equal(f.calls(), stopped, 'no poll once every watcher stopped');
  } finally {
    for (const w of watchers) w.stop();
    f.restore();
  }
});
