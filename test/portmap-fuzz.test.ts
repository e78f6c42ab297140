/**
 * Seeded, bounded fuzzing of the port-mapping parsers that read what a router
 * (or anything on the LAN) sends: PCP and NAT-PMP responses, SSDP answers,
 * device descriptions and SOAP responses. 10k cases each; every case must
 * return (never throw), and memory must stay bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePcpResponse, encodePcpMap, newNonce } from '../src/portmap/pcp.js';
import { parseNatPmpResponse } from '../src/portmap/natpmp.js';
import { parseDeviceDescription, parseSoapResponse, parseSsdpResponse } from '../src/portmap/upnp.js';
import { mulberry32u } from '../src/util/prng.js';

const CASES = 10_000;

function randomBytes(next: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}

/** Flip, insert, delete and truncate bytes of a valid seed. */
function mutate(next: () => number, seed: Buffer): Buffer {
  let b = Buffer.from(seed);
  const ops = 1 + (next() % 6);
  for (let i = 0; i < ops; i++) {
    const at = b.length ? next() % b.length : 0;
    switch (next() % 4) {
      case 0:
        if (b.length) b[at] = next() & 0xff;
        break;
      case 1:
        b = Buffer.concat([b.subarray(0, at), randomBytes(next, 1 + (next() % 8)), b.subarray(at)]);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + (next() % 8))]);
        break;
      default:
        b = b.subarray(0, at);
    }
  }
  return b;
}

function pcpMapResponse(): Buffer {
  const req = encodePcpMap({
    clientIp: '10.0.1.10',
    internalPort: 4000,
    suggestedPort: 4000,
    lifetime: 7200,
    nonce: newNonce(),
  });
  const r = Buffer.from(req);
  r[1] = 0x81;
  r.writeUInt32BE(1234, 8);
  r[56] = 203;
  return r;
}

const NATPMP_SEEDS = [
  Buffer.from([0, 128, 0, 0, 0, 0, 1, 0, 203, 0, 113, 1]),
  Buffer.from([0, 129, 0, 0, 0, 0, 1, 0, 0x0f, 0xa0, 0x0f, 0xa0, 0, 0, 0x1c, 0x20]),
];

const SSDP_SEED =
  'HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n' +
  'USN: uuid:1::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://10.0.1.1:5000/rootDesc.xml\r\n\r\n';

const DESC_SEED =
  '<?xml version="1.0"?><root><URLBase>http://10.0.1.1:5000</URLBase><device><deviceList><device><serviceList>' +
  '<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>' +
  '<controlURL>/ctl/IPConn</controlURL></service>' +
  '</serviceList></device></deviceList></device></root>';

const SOAP_SEED =
  '<?xml version="1.0"?><s:Envelope><s:Body><u:AddAnyPortMappingResponse xmlns:u="urn:x">' +
  '<NewReservedPort>4000</NewReservedPort></u:AddAnyPortMappingResponse></s:Body></s:Envelope>';
const FAULT_SEED =
  '<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>718</errorCode>' +
  '<errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>';

/** Runs `fn` on CASES inputs from `gen`; asserts it never throws and the heap does not grow without bound. */
function fuzz(name: string, seed: number, gen: (next: () => number, i: number) => Buffer, fn: (b: Buffer) => unknown) {
  const next = mulberry32u(seed);
  global.gc?.();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < CASES; i++) {
    const input = gen(next, i);
    try {
      fn(input);
    } catch (e) {
      assert.fail(
        `${name}: case ${i} (seed ${seed}) threw ${(e as Error).stack}\ninput: ${input.toString('hex').slice(0, 400)}`,
      );
    }
  }
  global.gc?.();
  const grown = process.memoryUsage().heapUsed - before;
  assert.ok(grown < 64 * 1024 * 1024, `${name}: heap grew by ${grown} bytes`);
}

test('fuzz: PCP responses (10k)', () => {
  const seed = pcpMapResponse();
  fuzz(
    'pcp',
    0x9c9,
    (next, i) => (i % 4 === 0 ? randomBytes(next, next() % 1200) : mutate(next, seed)),
    (b) => {
      const r = parsePcpResponse(b);
      assert.ok(r && typeof r.kind === 'string');
    },
  );
});

test('fuzz: NAT-PMP responses (10k)', () => {
  fuzz(
    'natpmp',
    0x5351,
    (next, i) => (i % 4 === 0 ? randomBytes(next, next() % 80) : mutate(next, NATPMP_SEEDS[i % 2])),
    (b) => {
      const r = parseNatPmpResponse(b);
      assert.ok(r && typeof r.kind === 'string');
    },
  );
});

test('fuzz: SSDP answers, device descriptions and SOAP responses (10k each)', () => {
  const text = (b: Buffer) => b.toString('latin1');
  fuzz(
    'ssdp',
    0x1900,
    (next, i) => (i % 4 === 0 ? randomBytes(next, next() % 5000) : mutate(next, Buffer.from(SSDP_SEED))),
    (b) => {
      const r = parseSsdpResponse(text(b));
      assert.ok('error' in r || typeof r.location === 'string');
    },
  );
  fuzz(
    'description',
    0xd35c,
    (next, i) => (i % 4 === 0 ? randomBytes(next, next() % 4000) : mutate(next, Buffer.from(DESC_SEED))),
    (b) => {
      const r = parseDeviceDescription(text(b), 'http://10.0.1.1:5000/rootDesc.xml');
      assert.ok('error' in r || typeof r.controlUrl === 'string');
    },
  );
  fuzz(
    'soap',
    0x50a9,
    (next, i) => mutate(next, Buffer.from(i % 2 ? SOAP_SEED : FAULT_SEED)),
    (b) => {
      const r = parseSoapResponse(200 + (b.length % 2) * 300, text(b), ['NewReservedPort']);
      assert.ok(typeof r.ok === 'boolean');
    },
  );
  // Pathological sizes: a description of many unclosed <service> tags, a huge SOAP body: linear, bounded.
  const many = '<service>'.repeat(7000);
  assert.ok('error' in parseDeviceDescription(many, 'http://10.0.1.1/'));
  assert.equal(parseSoapResponse(200, 'x'.repeat(70_000), []).ok, false);
});
