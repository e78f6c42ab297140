import pino from 'pino';

/**
 * Structured logging. Every line carries an `event` field, which is the public
 * interface scripts depend on (`ready`, `path`, `error`, ...). Logs always go to
 * stderr: with `peer visit --stdio`, stdout carries the tunnelled bytes.
 */
export type LogFormat = 'text' | 'json';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export interface Logger {
  debug(event: string, msg: string, fields?: Record<string, unknown>): void;
  info(event: string, msg: string, fields?: Record<string, unknown>): void;
  warn(event: string, msg: string, fields?: Record<string, unknown>): void;
  error(event: string, msg: string, fields?: Record<string, unknown>): void;
  child(bindings: Record<string, unknown>): Logger;
}

export interface LogOptions {
  format?: LogFormat;
  level?: LogLevel;
  /** Where lines go; defaults to stderr. Tests pass their own sink. */
  sink?: { write(line: string): void };
}

/** Field names that must never reach a log, whatever a caller passes. */
const REDACT = ['secret', 'psk', 'token', 'key', 'ticket', '*.secret', '*.token', '*.ticket'];

export function createLogger(opts: LogOptions = {}): Logger {
  const format = opts.format ?? 'text';
  const sink = opts.sink ?? { write: (line: string) => process.stderr.write(line) };
  const dest = format === 'json' ? sink : { write: (line: string) => sink.write(formatText(line)) };
  const base = pino(
    {
      level: opts.level ?? 'info',
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT, censor: '[redacted]' },
      messageKey: 'message',
    },
    dest,
  );
  return wrap(base);
}

function wrap(p: pino.Logger): Logger {
  const at =
    (lvl: 'debug' | 'info' | 'warn' | 'error') => (event: string, msg: string, fields?: Record<string, unknown>) =>
      // Every `error` event carries a code (src/util/errors.ts); one a caller forgot is 'internal'.
      p[lvl](event === 'error' ? { code: 'internal', ...fields, event } : { ...fields, event }, msg);
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (bindings) => wrap(p.child(bindings)),
  };
}

/** Renders one pino JSON line as `time level event: message key=value ...`. */
export function formatText(jsonLine: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(jsonLine);
  } catch {
    return jsonLine;
  }
  const { time, level, event, message, ...rest } = o;
  const extras = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  const t = typeof time === 'string' ? time.slice(11, 23) : '';
  return `${t} ${String(level).toUpperCase().padEnd(5)} ${event}: ${message ?? ''}${extras ? '  ' + extras : ''}\n`;
}

/** A logger that drops everything; for library code used without a CLI. */
export const nullLogger: Logger = createLogger({ level: 'silent' });
