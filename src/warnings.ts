/**
 * Warnings and misuse messages. Warnings go through `process.emitWarning` so they show
 * up once in the process log with a stable `code` (and can be silenced or turned into
 * errors with Node's own `--no-warnings` / `--throw-deprecation` style tooling).
 */

/** The `type` (name) of every warning this package emits. */
export const WARNING_TYPE = 'ContextCacheWarning';

/** Code of the warning a request cache emits once when it is used past its lifetime. */
export const EXPIRED = 'CONTEXT_CACHE_EXPIRED';

/** Code of the warning a request cache emits once when it is used after its request ended. */
export const ENDED = 'CONTEXT_CACHE_ENDED';

/** The public function a user called: a warning's stack trace starts at its caller. */
// biome-ignore lint/complexity/noBannedTypes: any function is a valid stack-trace cut point.
export type StackCut = Function;

/** Whether the runtime has Node's `process.emitWarning` (Node, Bun, Deno; not Workers). */
function canEmitWarning(): boolean {
  return (
    typeof process === 'object' && process !== null && typeof process.emitWarning === 'function'
  );
}

/**
 * Emit a warning. `cut` is the public function the user called, so the stack trace
 * starts in the user's code rather than in ours. Where the runtime has no
 * `process.emitWarning` (Workers), `console.warn` carries the same code and text.
 */
export function warn(message: string, code: string, cut: StackCut): void {
  if (canEmitWarning()) process.emitWarning(message, WARNING_TYPE, code, cut);
  else console.warn(`[${code}] ${WARNING_TYPE}: ${message}`);
}

/** Emit a warning with a `detail` (such as the stack of the error it reports). */
export function warnWithDetail(message: string, code: string, detail: string | undefined): void {
  if (canEmitWarning()) {
    process.emitWarning(
      message,
      detail === undefined ? { type: WARNING_TYPE, code } : { type: WARNING_TYPE, code, detail },
    );
  } else {
    console.warn(
      `[${code}] ${WARNING_TYPE}: ${message}${detail === undefined ? '' : `\n${detail}`}`,
    );
  }
}

/** Describe a received argument for an error message: `a number (5)`, `an object (Map)`. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return value === '' ? 'an empty string' : `a string (${JSON.stringify(value)})`;
    case 'number':
    case 'boolean':
      return `a ${typeof value} (${String(value)})`;
    case 'bigint':
      return `a bigint (${String(value)}n)`;
    case 'symbol':
      return `a symbol (${String(value.description)})`;
    case 'function':
      return value.name ? `a function (${value.name})` : 'a function';
    default: {
      const name = (value as object).constructor?.name;
      return name && name !== 'Object' ? `an object (${name})` : 'an object';
    }
  }
}

/** Whether `value` is a whole number of at least `min` (or `Infinity`), as counts are. */
export function isCount(value: unknown, min: number): value is number {
  return (
    typeof value === 'number' && value >= min && (Number.isInteger(value) || value === Infinity)
  );
}

/** Whether `value` is a positive number of milliseconds. */
export function isDuration(value: unknown): value is number {
  return typeof value === 'number' && value > 0;
}
