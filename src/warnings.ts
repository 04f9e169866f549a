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

/**
 * Emit a warning. `cut` is the public function the user called, so the stack trace
 * starts in the user's code rather than in ours.
 */
export function warn(message: string, code: string, cut: StackCut): void {
  if (typeof process === 'object' && typeof process.emitWarning === 'function') {
    process.emitWarning(message, WARNING_TYPE, code, cut);
  } else {
    console.error(`[${code}] ${WARNING_TYPE}: ${message}`);
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

/** Code of the warning for two getters of one kind made for one group with different functions. */
export const GROUP_REUSED = 'CONTEXT_CACHE_GROUP_REUSED';

/**
 * Throw a `TypeError` listing the known options when `options` has any other own
 * property (a misspelled `maxBatchsize` must not be ignored silently).
 */
export function checkOptionNames(fn: string, options: object, known: readonly string[]): void {
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) {
      throw new TypeError(
        `${fn}(): unknown option ${JSON.stringify(name)}; the options are ${known.join(', ')}.`,
      );
    }
  }
}

/** The function each getter kind (`contextBatched`, ...) was first made with, by group. */
// biome-ignore lint/complexity/noBannedTypes: getters are compared by identity only.
const groupFunctions = new Map<string, Map<string, Function>>();
const warnedGroups = new Set<string>();

/**
 * Remember that `kind` made a getter for `group` with `fn`; a second one made with
 * another function emits one `CONTEXT_CACHE_GROUP_REUSED` warning per kind and group:
 * the two getters would read each other's values.
 */
// biome-ignore lint/complexity/noBannedTypes: any loader or batch function.
export function noteGroup(kind: string, group: string, fn: Function, cut: StackCut): void {
  let byGroup = groupFunctions.get(kind);
  if (byGroup === undefined) {
    byGroup = new Map();
    groupFunctions.set(kind, byGroup);
  }
  const first = byGroup.get(group);
  if (first === undefined) {
    byGroup.set(group, fn);
    return;
  }
  const id = `${kind}\u0000${group}`;
  if (first === fn || warnedGroups.has(id)) return;
  warnedGroups.add(id);
  warn(
    `${kind}('${group}') was made twice with two different functions. Getters of one group ` +
      `share their entries, so each would return values the other loaded. Give each its own ` +
      `group, or make the getter once and import it where it is needed.`,
    GROUP_REUSED,
    cut,
  );
}
