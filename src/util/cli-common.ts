import { Option, type Command } from 'commander';
import { createLogger, type LogFormat, type Logger, type LogLevel } from './log.js';
import { codeOf, type ErrorCode } from './errors.js';

/** Options every command shares. */
export function addLogOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--log-format <format>',
        'log output: text for people, json for scripts (one object per line, each with an "event")',
      )
        .choices(['text', 'json'])
        .default('text'),
    )
    .addOption(
      new Option('--log-level <level>', 'least severe level to print')
        .choices(['debug', 'info', 'warn', 'error'])
        .default('info'),
    )
    .option('-q, --quiet', 'print warnings and errors only');
}

export function loggerFrom(opts: { logFormat?: string; logLevel?: string; quiet?: boolean }): Logger {
  const level: LogLevel = opts.quiet ? 'warn' : ((opts.logLevel as LogLevel) ?? 'info');
  return createLogger({ format: (opts.logFormat as LogFormat) ?? 'text', level });
}

/**
 * Ends the process after a fatal error: one line, as an `error` event with its
 * `code` in JSON mode, and exit status 1. Takes a CodedError (any other thrown
 * value is 'internal'), or a message and its code. Waits for stderr to drain so
 * the reason is never lost.
 */
export function die(log: Logger | null, error: Error): never;
export function die(log: Logger | null, message: string, code: ErrorCode): never;
export function die(log: Logger | null, error: unknown, code?: ErrorCode): never {
  const message = typeof error === 'string' ? error : error instanceof Error ? error.message : String(error);
  const c = code ?? codeOf(error);
  if (log) log.error('error', message, { code: c });
  else process.stderr.write(`error: ${message} (${c})\n`);
  process.exitCode = 1;
  // Let pending writes flush, then exit even if sockets are still open.
  setTimeout(() => process.exit(1), 50);
  throw new ExitSignal();
}

/** Thrown by die() so callers' stacks unwind without running more code. */
export class ExitSignal extends Error {
  constructor() {
    super('exiting');
  }
}

/** Installs SIGINT/SIGTERM handlers that call `stop` once and exit after a grace period. */
export function onShutdown(log: Logger, stop: () => void | Promise<void>, graceMs = 3000): void {
  let stopping = false;
  const handler = (sig: string) => {
    if (stopping) process.exit(130);
    stopping = true;
    log.info('shutdown', `received ${sig}, shutting down`);
    setTimeout(() => process.exit(0), graceMs).unref();
    Promise.resolve(stop()).finally(() => setTimeout(() => process.exit(0), 100).unref());
  };
  process.on('SIGINT', () => handler('SIGINT'));
  process.on('SIGTERM', () => handler('SIGTERM'));
}
