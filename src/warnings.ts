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

/** How messages name calls of the getters made by this package, by getter. */
const LABELS = new WeakMap<StackCut, string>();

/**
 * Name the calls of `getter` in errors and warnings: `label` is how a message names one,
 * such as "the getter of contextCached('user')".
 */
export function labelCalls(getter: StackCut, label: string): void {
  LABELS.set(getter, label);
}

/**
 * How a message names a call of `fn` made through `cut`: the label of a getter (see
 * `labelCalls`), else `fn` itself when it is one already ("….invalidate()"), else `fn()`.
 */
export function callerLabel(fn: string, cut?: StackCut): string {
  const label = cut === undefined ? undefined : LABELS.get(cut);
  if (label !== undefined) return label;
  return fn.endsWith(')') ? fn : `${fn}()`;
}

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

/** `'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`. */
function listNames(names: readonly string[]): string {
  const quoted = names.map((name) => `'${name}'`);
  return quoted.length < 2
    ? (quoted[0] ?? '')
    : `${quoted.slice(0, -1).join(', ')} or ${quoted[quoted.length - 1]}`;
}

/** Edit distance of two short names (for "did you mean"). */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] as number;
      row[j] = Math.min(
        above + 1,
        (row[j - 1] as number) + 1,
        diagonal + (a[i - 1]?.toLowerCase() === b[j - 1]?.toLowerCase() ? 0 : 1),
      );
      diagonal = above;
    }
  }
  return row[b.length] as number;
}

/** The TypeError for an option `name` that `fn` does not know. */
export function unknownOption(
  fn: string,
  name: string,
  known: readonly string[],
  what = 'options',
): TypeError {
  // A guess: a known name this one extends or abbreviates (lifetimeMs, maxEntry), else
  // the closest one within a few typos.
  let guess = known.find((k) => name.startsWith(k) || (name.length > 2 && k.startsWith(name)));
  if (guess === undefined) {
    let best = Math.max(2, Math.floor(name.length / 3)) + 1;
    for (const candidate of known) {
      const d = distance(name, candidate);
      if (d < best) {
        best = d;
        guess = candidate;
      }
    }
  }
  return new TypeError(
    `${fn}(): unknown option ${what}.${name}${guess === undefined ? '' : ` (did you mean '${guess}'?)`}. ` +
      `The known options are ${listNames(known)}.`,
  );
}

/**
 * Throw `unknownOption` for the first own enumerable property of `options` not in
 * `known`. `options` must already be known to be an object. Builds nothing when every
 * name is known (a `for…in` over a small object literal is a few nanoseconds).
 */
export function checkOptionNames(
  fn: string,
  options: object,
  known: readonly string[],
  what = 'options',
): void {
  for (const name in options) {
    if (!known.includes(name) && Object.hasOwn(options, name)) {
      throw unknownOption(fn, name, known, what);
    }
  }
}
