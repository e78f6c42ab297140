/**
 * UPnP IGD: SSDP discovery, the device description, and SOAP calls on
 * WANIPConnection (AddPortMapping, AddAnyPortMapping, DeletePortMapping,
 * GetExternalIPAddress). The parsers are pure and never throw; every reply is
 * size-bounded; only the default gateway is ever contacted (SSDP answers and
 * description/control URLs that point anywhere else are dropped).
 */
import dgram from 'node:dgram';
import http from 'node:http';

// ---------------------------------------------------------------- timings and bounds
/** SSDP M-SEARCH is sent again after this long without an answer. */
export const SSDP_RESEND_MS = 300;
/** At most this many bytes of an HTTP body (device description, SOAP response) are read. */
export const UPNP_MAX_BODY_BYTES = 64 * 1024;
/** SSDP answers longer than this are not SSDP. */
export const SSDP_MAX_BYTES = 4096;

export const SSDP_ADDRESS = '239.255.255.250';
export const SSDP_PORT = 1900;
const SEARCH_TARGET = 'urn:schemas-upnp-org:device:InternetGatewayDevice:1';
const SERVICE_TYPES = [
  'urn:schemas-upnp-org:service:WANIPConnection:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
];

// ---------------------------------------------------------------- pure parsers

export interface SsdpAnswer {
  location: string;
  st: string;
  usn: string;
}

/** An SSDP search response (pure): "HTTP/1.1 200 OK" and a LOCATION header. */
export function parseSsdpResponse(text: string): SsdpAnswer | { error: string } {
  if (text.length > SSDP_MAX_BYTES) return { error: `too long (${text.length} chars)` };
  const lines = text.split(/\r?\n/, 64);
  if (!/^HTTP\/1\.[01] 200\b/i.test(lines[0] ?? ''))
    return { error: `not a 200 response: ${JSON.stringify((lines[0] ?? '').slice(0, 40))}` };
  const h: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i <= 0) continue;
    h[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  if (!h.location) return { error: 'no LOCATION header' };
  return { location: h.location, st: h.st ?? '', usn: h.usn ?? '' };
}

/** The text of the first element named `name` (any namespace prefix) in `xml`, entities decoded; null if absent. */
export function xmlText(xml: string, name: string): string | null {
  const re = new RegExp(`<(?:[A-Za-z0-9_.-]{1,32}:)?${name}(?:\\s[^<>]{0,512})?>([^<]{0,2048})</`);
  const m = re.exec(xml);
  return m ? decodeEntities(m[1].trim()) : null;
}

function decodeEntities(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

export interface IgdService {
  serviceType: string;
  /** Absolute control URL. */
  controlUrl: string;
}

/**
 * The WAN connection service of a device description (pure): the first
 * <service> whose serviceType is WANIPConnection:2, :1 or WANPPPConnection:1
 * (in that order of preference), its controlURL resolved against URLBase or
 * the description's own URL. Linear in the input (indexOf scanning).
 */
export function parseDeviceDescription(xml: string, descriptionUrl: string): IgdService | { error: string } {
  if (xml.length > UPNP_MAX_BODY_BYTES) return { error: `description too long (${xml.length} chars)` };
  const found: { serviceType: string; control: string }[] = [];
  let at = 0;
  for (let n = 0; n < 64; n++) {
    const open = xml.indexOf('<service>', at);
    if (open < 0) break;
    const close = xml.indexOf('</service>', open);
    if (close < 0) break;
    const block = xml.slice(open, close);
    const serviceType = xmlText(block, 'serviceType');
    const control = xmlText(block, 'controlURL');
    if (serviceType && control) found.push({ serviceType, control });
    at = close + 10;
  }
  for (const want of SERVICE_TYPES) {
    const s = found.find((f) => f.serviceType === want);
    if (!s) continue;
    const base = xmlText(xml, 'URLBase') || descriptionUrl;
    try {
      return { serviceType: s.serviceType, controlUrl: new URL(s.control, base).href };
    } catch {
      return { error: `bad controlURL ${JSON.stringify(s.control.slice(0, 80))}` };
    }
  }
  return { error: 'no WANIPConnection or WANPPPConnection service' };
}

export type SoapResult =
  { ok: true; fields: Record<string, string> } | { ok: false; code: number; description: string };

/** A SOAP response body (pure): the named out-arguments, or the UPnPError of a fault. */
export function parseSoapResponse(status: number, xml: string, outArgs: readonly string[]): SoapResult {
  if (xml.length > UPNP_MAX_BODY_BYTES) return { ok: false, code: 0, description: 'response too long' };
  const fault = xml.includes('Fault>') || status >= 400;
  if (fault) {
    const code = Number(xmlText(xml, 'errorCode') ?? NaN);
    return {
      ok: false,
      code: Number.isInteger(code) ? code : 0,
      description: (xmlText(xml, 'errorDescription') ?? `HTTP ${status}`).slice(0, 200),
    };
  }
  if (status !== 200) return { ok: false, code: 0, description: `HTTP ${status}` };
  if (!/Response[\s>]/.test(xml)) return { ok: false, code: 0, description: 'not a SOAP response' };
  const fields: Record<string, string> = {};
  for (const a of outArgs) {
    const v = xmlText(xml, a);
    if (v !== null) fields[a] = v;
  }
  return { ok: true, fields };
}

/** UPnP error codes we act on (IGD WANIPConnection). */
export const UPNP_ERRORS = {
  conflict: 718,
  onlyPermanentLeases: 725,
  noSuchEntry: 714,
} as const;

// ---------------------------------------------------------------- I/O

/**
 * Sends M-SEARCH for an IGD (multicast, and unicast to the gateway) and
 * resolves with the first answer from the gateway whose LOCATION points at
 * the gateway; null after `timeoutMs`. Other answers are dropped and logged.
 */
export function ssdpSearch(
  gateway: string,
  timeoutMs: number,
  debug: (msg: string) => void,
): Promise<{ location: string } | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    const msg = Buffer.from(
      `M-SEARCH * HTTP/1.1\r\nHOST: ${SSDP_ADDRESS}:${SSDP_PORT}\r\nMAN: "ssdp:discover"\r\n` +
        `MX: 1\r\nST: ${SEARCH_TARGET}\r\n\r\n`,
    );
    let done = false;
    let resend: NodeJS.Timeout | undefined;
    const finish = (r: { location: string } | null) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearInterval(resend);
      try {
        s.close();
      } catch {
        /* closed */
      }
      resolve(r);
    };
    const deadline = setTimeout(() => finish(null), timeoutMs);
    s.on('error', () => finish(null));
    s.on('message', (buf, rinfo) => {
      if (rinfo.address !== gateway) return debug(`SSDP answer from ${rinfo.address}, not the gateway: dropped`);
      const a = parseSsdpResponse(buf.subarray(0, SSDP_MAX_BYTES + 1).toString('latin1'));
      if ('error' in a) return debug(`malformed SSDP answer dropped: ${a.error}`);
      if (!urlOnHost(a.location, gateway))
        return debug(`SSDP LOCATION ${a.location.slice(0, 100)} is not on the gateway: dropped`);
      finish({ location: a.location });
    });
    const send = () => {
      s.send(msg, SSDP_PORT, SSDP_ADDRESS, () => {});
      s.send(msg, SSDP_PORT, gateway, () => {});
    };
    s.bind(0, () => {
      send();
      resend = setInterval(send, SSDP_RESEND_MS);
    });
  });
}

/** Is `url` an http URL on `host`? Only the gateway is ever contacted. */
export function urlOnHost(url: string, host: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' && u.hostname === host;
  } catch {
    return false;
  }
}

/**
 * One HTTP exchange, body bounded by UPNP_MAX_BODY_BYTES, no redirects.
 * Rejects on errors, and when the whole exchange takes longer than
 * `timeoutMs`: the socket's own timeout only measures silence, and a router
 * that drips a byte (or a 1xx reply) now and then would hold it forever.
 */
export function httpRequest(
  url: string,
  opts: { method: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; timeoutMs: number },
): Promise<{ status: number; body: string }> {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request(url, { method: opts.method, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > UPNP_MAX_BODY_BYTES) {
          req.destroy(new Error(`body larger than ${UPNP_MAX_BODY_BYTES} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
    const deadline = setTimeout(() => req.destroy(new Error('timed out')), opts.timeoutMs);
    req.once('close', () => clearTimeout(deadline));
  });
}

/** Fetches and parses the device description at `location`; the control URL must be on the gateway too. */
export async function fetchIgd(
  location: string,
  gateway: string,
  timeoutMs: number,
): Promise<IgdService | { error: string }> {
  const r = await httpRequest(location, { method: 'GET', timeoutMs });
  if (r.status !== 200) return { error: `description: HTTP ${r.status}` };
  const svc = parseDeviceDescription(r.body, location);
  if ('error' in svc) return svc;
  if (!urlOnHost(svc.controlUrl, gateway))
    return { error: `control URL ${svc.controlUrl.slice(0, 100)} is not on the gateway` };
  return svc;
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** One SOAP action on the IGD service. Rejects on transport errors; faults come back as { ok: false }. */
export async function soapCall(
  svc: IgdService,
  action: string,
  args: [string, string | number][],
  outArgs: readonly string[],
  timeoutMs: number,
): Promise<SoapResult> {
  const body =
    `<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" ` +
    `s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:${action} xmlns:u="${svc.serviceType}">` +
    args.map(([k, v]) => `<${k}>${xmlEscape(String(v))}</${k}>`).join('') +
    `</u:${action}></s:Body></s:Envelope>\r\n`;
  const r = await httpRequest(svc.controlUrl, {
    method: 'POST',
    timeoutMs,
    body,
    headers: {
      'Content-Type': 'text/xml; charset="utf-8"',
      SOAPAction: `"${svc.serviceType}#${action}"`,
      'Content-Length': String(Buffer.byteLength(body)),
    },
  });
  return parseSoapResponse(r.status, r.body, outArgs);
}
