/**
 * The shared tier's default serializer: MessagePack (msgpackr, with its structured-clone
 * and record extensions) behind a two-byte header, with a check that refuses what the
 * format would silently change.
 *
 * What round-trips: `undefined`, `null`, booleans, numbers, strings, `BigInt`, plain
 * objects (prototype `Object.prototype` or `null`) and arrays, `Date`, `Map`, `Set`,
 * typed arrays and `Buffer`, nested in any way, shared references and cycles included.
 * Anything else (a class instance, a function, a symbol, a `Promise`, an `Error`, a
 * `WeakMap`, …) makes `encode` throw a `NotSerializableError` naming the type and where
 * it sits, so the cache returns the loaded value without storing it.
 *
 * Why msgpackr (see bench/SERIALIZER.md for the numbers): among the candidates that
 * round-trip every type above, it measured as fast as `node:v8` on Node and about 3×
 * faster than superjson and devalue, with the smallest output; it is pure JavaScript on
 * every runtime (its native string decoder is an optional add-on on Node), and its bytes
 * are the same whatever runtime or Node version wrote them. `node:v8`'s structured clone is as
 * complete but exists only on Node (Bun's has another format, Workers have none), and
 * its format changes with V8 versions: instances on two Node majors sharing one Redis
 * would not read each other's values.
 */

import { Packr } from 'msgpackr';
import type { StoreValue } from './types.js';

/** Turns the value envelope into what the store keeps, and back. */
export interface Serializer {
  encode(value: unknown): StoreValue;
  decode(raw: StoreValue): unknown;
}

/** Code of the warning for a loaded value the serializer cannot round-trip. */
export const NOT_SERIALIZABLE = 'CONTEXT_CACHE_NOT_SERIALIZABLE';

/**
 * The value holds something the default serializer cannot round-trip. `type` names it
 * (`Foo instance`, `function`, `symbol`); `path` says where it sits (`.owner.tags[2]`,
 * empty for the value itself).
 */
export class NotSerializableError extends TypeError {
  override readonly name = 'NotSerializableError';
  readonly code = NOT_SERIALIZABLE;
  readonly type: string;
  readonly path: string;
  constructor(type: string, path: string) {
    super(
      `the default serializer cannot round-trip ${path === '' ? `the value itself (${type})` : `the ${type} at ${path}`}`,
    );
    this.type = type;
    this.path = path;
  }
}

/**
 * First byte of every value: 0xc1 is the one byte MessagePack never uses, and no JSON
 * text starts with it, so a value written by another format (the JSON of earlier
 * releases, another program) is told apart at once and read as a miss.
 */
const HEADER = 0xc1;
/** Second byte: the version of this format. A later format gets a new number. */
const VERSION = 1;

const packr = new Packr({
  // Date, Map, Set, RegExp, Error, typed arrays, shared references and cycles.
  structuredClone: true,
  // Every typed array keeps its own type (Float64Array comes back a Float64Array).
  moreTypes: true,
  // Records tell a plain object from a Map; each value carries its own definitions, so
  // any instance (any process, any release of msgpackr) reads it alone.
  useRecords: true,
  // BigInt of any size comes back a BigInt; 64-bit integers stay exact.
  int64AsType: 'bigint',
  // Buffers come back as copies, never as views into the stored bytes: a caller that
  // changes what it got never changes what the next caller reads.
  copyBuffers: true,
});

const TYPED_ARRAYS: ReadonlySet<object> = new Set<object>(
  [
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array,
  ].map((type) => type.prototype),
);

const BUFFER_PROTOTYPE: object | undefined =
  typeof Buffer === 'function' ? Buffer.prototype : undefined;

function typeName(value: object): string {
  if (typeof value === 'function') return 'function';
  const proto: unknown = Object.getPrototypeOf(value);
  const name =
    typeof proto === 'object' && proto !== null
      ? (proto as { constructor?: { name?: unknown } }).constructor?.name
      : undefined;
  return typeof name === 'string' && name !== ''
    ? `${name} instance`
    : 'object of an unnamed class';
}

/** `String.prototype.isWellFormed` (ES2024: Node 20, Bun, Deno, Workers), where the runtime has it. */
const isWellFormed = (String.prototype as { isWellFormed?: (this: string) => boolean })
  .isWellFormed;

/** Whether `text` is well-formed UTF-16 (no lone surrogate), where the runtime can tell. */
function wellFormed(text: string): boolean {
  return isWellFormed === undefined || isWellFormed.call(text);
}

const LONE_SURROGATE = () => new NotSerializableError('string with a lone surrogate', '');

/**
 * Whether `refuse` also checks strings (and record keys) for lone surrogates, which
 * MessagePack's UTF-8 turns into U+FFFD. Checking every string costs a fifth of an
 * encode, so it is done only for a value whose encoding holds U+FFFD at all.
 */
let checkingStrings = false;

/** U+FFFD in UTF-8: what a lone surrogate is encoded as. */
function hasReplacementChar(bytes: Uint8Array): boolean {
  for (
    let i = bytes.indexOf(0xef);
    i >= 0 && i + 2 < bytes.length;
    i = bytes.indexOf(0xef, i + 1)
  ) {
    if (bytes[i + 1] === 0xbf && bytes[i + 2] === 0xbd) return true;
  }
  return false;
}

/** Past this depth, references are tracked: only a cycle nests this deep in practice. */
const TRACK_DEPTH = 64;

/**
 * Why `value` cannot round-trip, or `undefined` when it can. Walks the whole value;
 * `seen` is made only for values nested past `TRACK_DEPTH` (cycles), so a typical row
 * costs no allocation.
 */
function refuse(
  value: unknown,
  depth: number,
  seen: Set<object> | undefined,
): NotSerializableError | undefined {
  switch (typeof value) {
    case 'string':
      return checkingStrings && !wellFormed(value as string) ? LONE_SURROGATE() : undefined;
    case 'number':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      return undefined;
    case 'symbol':
      return new NotSerializableError('symbol', '');
    case 'function':
      return new NotSerializableError('function', '');
  }
  if (value === null) return undefined;
  const object = value as object;
  if (depth > TRACK_DEPTH) {
    if (seen === undefined) return refuse(value, 0, new Set());
    if (seen.has(object)) return undefined;
    seen.add(object);
  }
  const next = depth + 1;
  const proto: unknown = Object.getPrototypeOf(object);
  if (proto === Object.prototype || proto === null) {
    const record = object as Record<string, unknown>;
    for (const key in record) {
      if (!Object.hasOwn(record, key)) continue;
      // msgpackr renames an own `__proto__` key (JSON.parse makes them) as a guard.
      const bad =
        key === '__proto__'
          ? new NotSerializableError('property named "__proto__"', '')
          : checkingStrings && !wellFormed(key)
            ? LONE_SURROGATE()
            : refuse(record[key], next, seen);
      if (bad !== undefined)
        return at(bad, /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`);
    }
    return undefined;
  }
  if (proto === Array.prototype) {
    const array = object as unknown[];
    for (let i = 0; i < array.length; i++) {
      const bad = refuse(array[i], next, seen);
      if (bad !== undefined) return at(bad, `[${i}]`);
    }
    return undefined;
  }
  if (proto === Date.prototype || TYPED_ARRAYS.has(proto as object) || proto === BUFFER_PROTOTYPE) {
    return undefined;
  }
  if (proto === Map.prototype) {
    let i = 0;
    for (const [key, item] of object as Map<unknown, unknown>) {
      const bad = refuse(key, next, seen) ?? refuse(item, next, seen);
      if (bad !== undefined) return at(bad, `<Map entry ${i}>`);
      i++;
    }
    return undefined;
  }
  if (proto === Set.prototype) {
    let i = 0;
    for (const item of object as Set<unknown>) {
      const bad = refuse(item, next, seen);
      if (bad !== undefined) return at(bad, `<Set item ${i}>`);
      i++;
    }
    return undefined;
  }
  return new NotSerializableError(typeName(object), '');
}

function at(err: NotSerializableError, step: string): NotSerializableError {
  return new NotSerializableError(err.type, step + err.path);
}

/**
 * Throws a `NotSerializableError` when `value` holds something the default serializer
 * cannot round-trip.
 */
export function assertSerializable(value: unknown): void {
  const bad = refuse(value, 0, undefined);
  if (bad !== undefined) throw bad;
}

/**
 * The default serializer of `createSharedCache()`: MessagePack with msgpackr's
 * structured-clone and record extensions, refusing (throwing) what it cannot round-trip.
 * Its values are `Buffer`s: a store must keep bytes as given (`memoryStore`,
 * `redisStore` and `tieredStore` do).
 */
export const defaultSerializer: Serializer = {
  encode(value) {
    assertSerializable(value);
    const body: Uint8Array = packr.pack(value);
    if (hasReplacementChar(body)) {
      // A real U+FFFD, or a lone surrogate replaced by one: look again at the strings.
      checkingStrings = true;
      try {
        assertSerializable(value);
      } finally {
        checkingStrings = false;
      }
    }
    // A Buffer where the runtime has one (Node, Bun, Deno, Workers with nodejs_compat),
    // plain bytes elsewhere.
    const out =
      typeof Buffer === 'function'
        ? Buffer.allocUnsafe(body.length + 2)
        : (new Uint8Array(body.length + 2) as Buffer);
    out[0] = HEADER;
    out[1] = VERSION;
    out.set(body, 2);
    return out;
  },
  decode(raw) {
    if (typeof raw === 'string' || raw.length < 3 || raw[0] !== HEADER) {
      throw new TypeError('not a value of the default serializer');
    }
    if (raw[1] !== VERSION) {
      throw new TypeError(`a value of another version (${raw[1]}) of the default serializer`);
    }
    return packr.unpack(raw.subarray(2));
  },
};
